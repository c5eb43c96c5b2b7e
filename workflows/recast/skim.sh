#!/usr/bin/env bash
# Stand-in skim for one signal point: one line per input file.
set -euo pipefail
IFS=, read -r -a files <<< "$1"
for f in "${files[@]}"; do printf 'ntuple %s from %s\n' "$3" "$f"; done > "$2"
