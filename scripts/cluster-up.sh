#!/usr/bin/env bash
# The first command of the README: installs what it needs, then starts the local cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pydiego cluster up "$@"
