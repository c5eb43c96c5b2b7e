#!/usr/bin/env bash
# Stand-in selection; fails (exit 3) when an input file is marked "corrupt".
set -euo pipefail
IFS=, read -r -a files <<< "$1"; out=$2
if grep -l corrupt "${files[@]}" >/dev/null 2>&1; then
  echo "select.sh: corrupt input" >&2
  exit 3
fi
printf 'selected from %s\n' "${files[@]}" > "$out"
