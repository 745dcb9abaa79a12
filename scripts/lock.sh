#!/usr/bin/env bash
# Regenerate uv.lock, the one lock of every install (scripts/bootstrap.sh for
# the tests and the run command, the Dockerfile for the image), from
# pyproject.toml's dependencies and its dev and bench extras:
#   bash scripts/lock.sh                      # after changing pyproject.toml
#   bash scripts/lock.sh --upgrade            # every package to its newest version
#   bash scripts/lock.sh --upgrade-package openai
# Without --upgrade, what is pinned stays pinned and only what pyproject.toml
# changed is resolved, so the same inputs give the same lock. After a merge
# conflict in uv.lock: take either side (git checkout --theirs uv.lock), then
# run this. Then `bash scripts/test.sh` installs the new lock and checks it
# (tests/deploy/test_lock.py).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON_BIN:-python3}"

# The uv that bootstrap.sh installed from the lock; else one in a throwaway
# virtualenv (a fresh clone, or a lock that no longer parses).
UV="$VENV/bin/uv"
if ! "$UV" --version >/dev/null 2>&1; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$PYTHON_BIN" -m venv "$tmp/venv"
  "$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check uv
  UV="$tmp/venv/bin/uv"
fi
"$UV" lock --project "$ROOT" "$@"
echo "wrote $ROOT/uv.lock ($("$UV" --version))"
