#!/usr/bin/env bash
# Stand-in fit of the selection and the control region (dataset names as arguments).
set -euo pipefail
printf 'fit of %s with %s\n' "$1" "$2" > fit.txt
