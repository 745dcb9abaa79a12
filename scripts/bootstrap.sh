#!/usr/bin/env bash
# Prepare this machine for running or testing the chat: a virtualenv with the
# project's dependencies, and Postgres and Redis up on 127.0.0.1.
# Sourced by scripts/run.sh and scripts/test.sh; safe to run again (idempotent).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON_BIN:-python3}"

log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }

# The virtualenv holds exactly what uv.lock pins for the app and its dev and
# bench extras (the versions and hashes the Docker image installs too), and the
# project itself, editable. `uv sync --locked` never changes the lock: when
# pyproject.toml and uv.lock disagree it stops and says so (run
# scripts/lock.sh); it removes what the lock does not name, and costs a fraction
# of a second when nothing changed, so it runs every time.
ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv $VENV"
    "$PYTHON_BIN" -m venv "$VENV"
  fi
  local wanted
  wanted="$("$VENV/bin/python" "$ROOT/scripts/uv_requirement.py" "$ROOT/uv.lock")"
  if [ "$("$VENV/bin/uv" --version 2>/dev/null | cut -d' ' -f2)" != "$(echo "$wanted" | sed -E 's/^uv==([^ ]+).*/\1/')" ]; then
    log "installing uv as pinned (with its hashes) in uv.lock"
    local requirement
    requirement="$(mktemp)"
    echo "$wanted" > "$requirement"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
      --require-hashes -r "$requirement"
    rm -f "$requirement"
  fi
  UV_PROJECT_ENVIRONMENT="$VENV" "$VENV/bin/uv" sync --quiet --locked --all-extras \
    --project "$ROOT" --python "$VENV/bin/python"
}

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return; fi
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && return; sleep 0.2; done
  log "PostgreSQL did not come up on 127.0.0.1:5432"; exit 1
}

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return; sleep 0.2; done
  log "Redis did not come up on 127.0.0.1:6379"; exit 1
}

ensure_venv
ensure_postgres
ensure_redis
