#!/usr/bin/env bash
# The one command that runs every test on a fresh machine:
#   bash scripts/test.sh [pytest args]
# It installs what the tests need (virtualenv, packages, Debian's Chromium for the
# browser tests), makes sure Postgres and Redis are up, lints, and runs pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source "$ROOT/scripts/bootstrap.sh"

# The browser tests drive Debian's Chromium (Playwright cannot download its own
# browsers on these machines: they reach no network but the package registries);
# install it only when it is missing.
if ! command -v chromium >/dev/null; then
  log "installing Debian's chromium for the browser tests"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update && $SUDO apt-get install -y chromium
fi

"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
# Both cores: pytest-xdist runs the files in two worker processes (each its own test
# database, Celery queue and Redis prefix: tests/settings.py), a file at a time so a
# module's servers start once. `-n 0` (or any -n) given here overrides it.
exec "$VENV/bin/python" -m pytest -n "${TEST_WORKERS:-auto}" --dist loadfile "$@"
