#!/usr/bin/env bash
# Stand-in control-region histogram.
set -euo pipefail
echo "control region" > "$1"
