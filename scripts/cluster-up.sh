#!/usr/bin/env bash
# The first command of the README: installs what it needs, starts the local cluster (control
# plane + 3 cells), then desires the sample LRP (examples/web.yml) and shows where it answers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/pydiego cluster up --cells "${PYDIEGO_CELLS:-3}" "$@"
if .venv/bin/pydiego desired-lrps web >/dev/null 2>&1; then
  echo "sample LRP 'web' already desired"
else
  echo "desiring the sample LRP examples/web.yml (busybox httpd, 3 instances)"
  .venv/bin/pydiego desire examples/web.yml --wait 60
fi
.venv/bin/pydiego actual-lrps --process-guid web
echo "try: curl http://<ADDRESS>:<host port>/   (e.g. the first row above), pydiego logs web --index 0"
