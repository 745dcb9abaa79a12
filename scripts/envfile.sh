#!/usr/bin/env bash
# load_env_file FILE: export the NAME=value lines of FILE (a .env file, as
# `docker compose` reads it) without overriding a variable already set in the
# environment. Blank lines and "# comments" are skipped; "export " before a name,
# matching quotes around a value and, for an unquoted value, a " # comment" after
# it are dropped. Nothing is expanded: "$HOME" stays "$HOME". A line that is not
# NAME=value stops with an error naming the file and line.
# Sourced by scripts/run.sh.

load_env_file() {
  local file="$1" line key value number=0
  while IFS= read -r line || [ -n "$line" ]; do
    number=$((number + 1))
    line="${line%$'\r'}"
    # trim leading whitespace
    line="${line#"${line%%[![:space:]]*}"}"
    case "$line" in '' | '#'*) continue ;; esac
    line="${line#export }"
    if [[ ! "$line" =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]]; then
      echo "$file:$number: expected NAME=value, got: $line" >&2
      return 1
    fi
    key="${BASH_REMATCH[1]}"
    value="${BASH_REMATCH[2]}"
    if [[ "$value" =~ ^\"(.*)\"[[:space:]]*(#.*)?$ || "$value" =~ ^\'(.*)\'[[:space:]]*(#.*)?$ ]]; then
      value="${BASH_REMATCH[1]}"
    else
      value="$(printf '%s' "$value" | sed -E 's/[[:space:]]+#.*$//; s/[[:space:]]+$//')"
    fi
    if [ -z "${!key+set}" ]; then
      export "$key=$value"
    fi
  done < "$file"
}
