#!/usr/bin/env bash
# Stand-in toy generator, seeded by %RNDM.
set -euo pipefail
printf 'toys with seed %s\n' "$1" > toys.root
