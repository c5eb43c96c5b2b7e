#!/usr/bin/env python3
"""Stand-in selection for one mass point."""
import sys

mass, files = sys.argv[2], sys.argv[3].split(",")
with open("sel.root", "w") as out:
    out.writelines(f"selected m={mass} {name}\n" for name in files)
