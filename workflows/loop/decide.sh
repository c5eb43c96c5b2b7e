#!/usr/bin/env bash
# The junction: go on (with alpha + 0.1) until three iterations have run.
set -euo pipefail
alpha=$2; iteration=$3
python3 - "$alpha" "$iteration" <<'PY'
import json, sys
alpha, iteration = float(sys.argv[1]), int(sys.argv[2])
json.dump({"to_continue": iteration < 3, "alpha": round(alpha + 0.1, 3)}, open("results.json", "w"))
PY
