#!/usr/bin/env bash
# The one command that runs the app on this machine, without Docker:
#   bash scripts/run.sh
# Installs what it needs, makes sure Postgres and Redis are up, creates the
# database, migrates, creates the admin account (DJANGO_SUPERUSER_USERNAME /
# DJANGO_SUPERUSER_PASSWORD, when set) and collects static files, then runs the
# same processes as docker-compose.yml: daphne (http://localhost:8000), a Celery
# worker and, when neither OPENAI_API_KEY nor OPENAI_BASE_URL is set, the local
# demo model. Every log line is prefixed by its process.
#
# Ctrl-C (or SIGTERM) stops them all: each gets SIGTERM and up to STOP_TIMEOUT
# seconds (default 30) to finish, so replies being streamed end cleanly; a
# second Ctrl-C kills them at once. The exit status is 130 after Ctrl-C, 143
# after SIGTERM, 1 when a process stopped on its own (its log says why).
#
# Settings come from the environment, then from .env (ENV_FILE), which never
# overrides a variable already set. Also: PORT (8000), HOST (127.0.0.1),
# DEMO_PORT (8001), WORKER_CONCURRENCY (50), STOP_TIMEOUT (30), DEMO_CONTROL (0;
# 1 turns on the demo model's /_control endpoint, which its tests use: anyone
# who reaches the port could then steer replies).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '%-9s%s\n' "[run]" "$*" >&2; }

source "$ROOT/scripts/envfile.sh"
ENV_FILE="${ENV_FILE:-$ROOT/.env}"
if [ -f "$ENV_FILE" ]; then
  load_env_file "$ENV_FILE"
fi
source "$ROOT/scripts/bootstrap.sh"

PORT="${PORT:-8000}"
HOST="${HOST:-127.0.0.1}"
DEMO_PORT="${DEMO_PORT:-8001}"
STOP_TIMEOUT="${STOP_TIMEOUT:-30}"
DEMO_CONTROL="${DEMO_CONTROL:-0}"
case "$DEMO_CONTROL" in
  0) demo_flags=() ;;
  1) demo_flags=(--control) ;;
  *) say "DEMO_CONTROL must be 0 or 1, not '$DEMO_CONTROL'"; exit 1 ;;
esac
PY="$VENV/bin/python"
export PYTHONUNBUFFERED=1
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-chatsite.settings}"

prefixed() {  # prefixed NAME COMMAND...: run it, every output line prefixed "[NAME]"
  local prefix
  prefix="$(printf '%-9s' "[$1]")"
  shift
  # sed ignores SIGTERM: it prints the command's last lines, then ends with it.
  "$@" 2>&1 | { trap '' INT TERM; exec sed -u "s/^/$prefix/"; }
}

ignoring_sigint() {  # ignoring_sigint COMMAND...: run it with SIGINT ignored
  trap '' INT
  exec "$@"
}

# --- once, in order: a failure stops here, before anything runs --------------
if [ -z "${OPENAI_API_KEY:-}" ] && [ -z "${OPENAI_BASE_URL:-}" ]; then
  # Set before the checks below so that they see the URL the worker will use.
  export GPT_DEMO_BASE_URL="http://127.0.0.1:$DEMO_PORT/v1"
  demo=1
else
  demo=0
fi
prefixed setup "$PY" manage.py ensure_database
prefixed setup "$PY" manage.py migrate --noinput
prefixed setup "$PY" manage.py ensure_superuser
prefixed setup "$PY" manage.py collectstatic --noinput --verbosity 0

# --- the processes -------------------------------------------------------------
names=()
pids=()
start() {  # start NAME COMMAND...: in the background
  # Ctrl-C in the terminal reaches every process of the group: web and worker
  # begin to stop on it, the demo model ignores it; the trap of this script
  # then stops them all, in order (see stop). bash's own "Terminated" notes
  # about a stopped command are dropped; the command's output is not.
  prefixed "$@" 2>/dev/null &
  names+=("$1")
  pids+=("$!")
}
signal_each() {  # signal_each SIGNAL NAME...: the commands started under those names
  local signal="$1" i name
  shift
  for i in "${!pids[@]}"; do
    for name in "$@"; do
      if [ "${names[$i]}" = "$name" ]; then
        # The command is a child of the background job; sed, its sibling,
        # ignores SIGTERM and ends after the command's last line.
        pkill "-$signal" -P "${pids[$i]}" 2>/dev/null || true
      fi
    done
  done
}
alive() {  # alive NAME...: whether any job started under those names still runs
  local i name
  for i in "${!pids[@]}"; do
    for name in "$@"; do
      if [ "${names[$i]}" = "$name" ] && kill -0 "${pids[$i]}" 2>/dev/null; then return 0; fi
    done
  done
  return 1
}
stop_and_wait() {  # stop_and_wait SECONDS NAME...: SIGTERM, then SIGKILL after SECONDS
  local timeout="$1"
  shift
  signal_each TERM "$@"
  local deadline=$((SECONDS + timeout))
  while alive "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "still running after ${timeout}s: killing $*"
      signal_each KILL "$@"
      deadline=$((SECONDS + 10))
    fi
    sleep 0.1
  done
}
stopping=0
stop() {  # stop STATUS: stop every process, wait for them, exit with STATUS
  if [ "$stopping" = 1 ]; then return; fi
  stopping=1
  trap 'say "killing"; signal_each KILL "${names[@]}"' INT TERM
  if [ "${#pids[@]}" -gt 0 ]; then
    say "stopping (Ctrl-C again to kill)..."
    # The worker first, with time to finish the replies it is streaming (Celery's
    # warm shutdown); the demo model last, since those replies read from it.
    stop_and_wait "$STOP_TIMEOUT" web worker beat
    stop_and_wait 10 demo
    wait 2>/dev/null || true
  fi
  if [ -n "${beat_state:-}" ]; then rm -rf "$beat_state"; fi
  say "stopped"
  exit "$1"
}
trap 'stop 130' INT
trap 'stop 143' TERM
trap 'stop $?' EXIT

listening() {  # listening PORT: whether something accepts connections there
  local host="$HOST"
  case "$host" in 0.0.0.0 | :: | '[::]') host=127.0.0.1 ;; esac
  (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null
}
wait_for_port() {  # wait_for_port PORT: until something listens there, or a process ended
  for _ in $(seq 1 600); do
    if listening "$1"; then return 0; fi
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || return 1; done
    sleep 0.1
  done
  return 1
}

for port in "$PORT" $([ "$demo" = 1 ] && echo "$DEMO_PORT"); do
  if listening "$port"; then
    say "port $port is in use (another run?): set PORT / DEMO_PORT to free ones"
    exit 1
  fi
done
if [ "$demo" = 1 ]; then
  say "no OPENAI_API_KEY: replies come from the local demo model (model \"demo\") on port $DEMO_PORT"
  # It ignores Ctrl-C (SIGINT): stop() ends it after the worker, see there.
  start demo ignoring_sigint "$PY" -m worker.demo_llm --host 127.0.0.1 --port "$DEMO_PORT" \
    ${demo_flags[@]+"${demo_flags[@]}"}
fi
# Its pool (threads) and concurrency (WORKER_CONCURRENCY) come from the settings.
start worker "$VENV/bin/celery" -A chatsite worker --loglevel INFO -n "run-$$@%h"
# Celery beat only when a periodic task exists (CELERY_BEAT_SCHEDULE).
if "$PY" -c 'import sys; from chatsite.celery import app; sys.exit(not app.conf.beat_schedule)'; then
  beat_state="$(mktemp -d)"  # beat's schedule file; removed by stop()
  start beat "$VENV/bin/celery" -A chatsite beat --loglevel INFO --schedule "$beat_state/schedule"
fi
start web "$VENV/bin/daphne" -b "$HOST" -p "$PORT" chatsite.asgi:application

if wait_for_port "$PORT"; then
  say "chat on http://localhost:$PORT , admin on http://localhost:$PORT/admin/  (Ctrl-C stops)"
fi
while :; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      status=0
      wait "${pids[$i]}" || status=$?
      say "${names[$i]} exited with status $status; stopping the rest"
      stop 1
    fi
  done
  sleep 0.5
done
