#!/usr/bin/env bash
# Stand-in skim: an ntuple and a histogram file from the input files.
set -euo pipefail
IFS=, read -r -a files <<< "$1"
printf 'ntuple of %s\n' "${files[@]}" > ntup.root
printf 'hist of %d file(s)\n' "${#files[@]}" > hist.root
