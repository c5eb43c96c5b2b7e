#!/usr/bin/env bash
# Stand-in event generator: N "events" from the seed file.
set -euo pipefail
seed=$(cat "$1"); out=$2
for i in 1 2 3; do echo "event $i seed $seed"; done > "$out"
