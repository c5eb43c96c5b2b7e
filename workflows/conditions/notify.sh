#!/usr/bin/env bash
# The failure branch: records why it ran.
set -euo pipefail
echo "notified: $1" > log.txt
