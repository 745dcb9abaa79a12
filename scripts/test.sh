#!/usr/bin/env bash
# The one command that runs every test on a fresh machine:
#   bash scripts/test.sh [pytest args]
# It installs what the tests need (virtualenv, packages, Debian's Chromium for the
# browser tests), makes sure Postgres and Redis are up, lints, and runs pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source "$ROOT/scripts/bootstrap.sh"

"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
exec "$VENV/bin/python" -m pytest "$@"
