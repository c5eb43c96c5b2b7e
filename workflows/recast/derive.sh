#!/usr/bin/env bash
# Stand-in derivation: AOD files in, one DAOD file out.
set -euo pipefail
IFS=, read -r -a files <<< "$1"
printf 'DAOD from %s\n' "${files[@]}" > "$2"
