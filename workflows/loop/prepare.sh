#!/usr/bin/env bash
# Stand-in preparation step before the loop.
set -euo pipefail
IFS=, read -r -a files <<< "$1"
printf 'prepared %s\n' "${files[@]}" > "$2"
