#!/usr/bin/env bash
# Run every test file on its own, one pytest process each, in random order
# within the file (pytest-randomly), and list those that fail alone:
#   bash scripts/test_each_file.sh [pytest args]
# The suite must not pass only because another file prepared something for it.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source "$ROOT/scripts/bootstrap.sh"
failed=()
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for file in $(git ls-files 'tests/**/test_*.py' 'tests/test_*.py' | sort); do
  start=$(date +%s)
  if "$VENV/bin/python" -m pytest "$file" -q -p randomly "$@" >"$log" 2>&1; then
    printf 'ok    %4ss  %s\n' "$(( $(date +%s) - start ))" "$file"
  else
    printf 'FAIL  %4ss  %s\n' "$(( $(date +%s) - start ))" "$file"
    tail -20 "$log"
    failed+=("$file")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'failed alone: %s\n' "${failed[@]}"
  exit 1
fi
echo "every test file passes on its own"
