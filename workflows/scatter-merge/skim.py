#!/usr/bin/env python3
"""Stand-in skim for one mass point."""
import sys

mass, files = sys.argv[2], sys.argv[3].split(",")
with open("skim.root", "w") as out:
    out.writelines(f"skim m={mass} {name}\n" for name in files)
