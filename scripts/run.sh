#!/usr/bin/env bash
# The one command that runs the app on this machine, without Docker:
#   bash scripts/run.sh
# Installs what it needs, makes sure Postgres and Redis are up, creates the
# database and migrates, then runs daphne (http://localhost:8000), a Celery
# worker and, when no OPENAI_API_KEY / OPENAI_BASE_URL is set, the local demo
# model. Logs are prefixed by process. Ctrl-C stops everything.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -f .env ]; then set -a; source .env; set +a; fi
EXTRAS="${EXTRAS:-dev}" source "$ROOT/scripts/bootstrap.sh"

PORT="${PORT:-8000}"
DEMO_PORT="${DEMO_PORT:-8001}"
PY="$VENV/bin/python"
export PYTHONUNBUFFERED=1

"$PY" manage.py ensure_database
"$PY" manage.py migrate --noinput

pids=()
start() {  # start NAME COMMAND...: run in the background, each line prefixed with NAME
  local name="$1"; shift
  ( exec "$@" 2>&1 | sed -u "s/^/[$name] /" ) &
  pids+=("$!")
}
stop() {
  trap - INT TERM EXIT
  echo "[run] stopping..." >&2
  for pid in "${pids[@]}"; do pkill -TERM -P "$pid" 2>/dev/null || true; kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "[run] stopped" >&2
}
trap stop INT TERM EXIT

if [ -z "${OPENAI_API_KEY:-}" ] && [ -z "${OPENAI_BASE_URL:-}" ]; then
  echo "[run] no OPENAI_API_KEY: replies come from the local demo model on port $DEMO_PORT" >&2
  export GPT_DEMO_BASE_URL="http://127.0.0.1:$DEMO_PORT/v1"
  start demo "$PY" -m worker.demo_llm --port "$DEMO_PORT"
fi
start worker "$VENV/bin/celery" -A chatsite worker --pool threads --concurrency "${WORKER_CONCURRENCY:-50}" --loglevel INFO
start web "$VENV/bin/daphne" -b "${HOST:-127.0.0.1}" -p "$PORT" chatsite.asgi:application
echo "[run] chat on http://localhost:$PORT  (Ctrl-C stops)" >&2
wait -n "${pids[@]}"
echo "[run] a process exited; stopping the rest" >&2
