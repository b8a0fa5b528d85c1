#!/usr/bin/env bash
# The test command of the README: installs what it needs (scripts/setup.sh), then runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pytest "$@"
