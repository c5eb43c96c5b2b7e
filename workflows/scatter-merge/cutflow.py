#!/usr/bin/env python3
"""Stand-in cut flow: one line per input file."""
import sys

for name in sys.argv[1].split(","):
    print(f"cutflow {name}")
