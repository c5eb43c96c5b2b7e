#!/usr/bin/env bash
# One fit of the loop body with the current alpha and iteration number.
set -euo pipefail
printf 'fit alpha=%s iteration=%s\n' "$2" "$3" > "$4"
