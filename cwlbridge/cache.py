"""What cwlbridge remembers between commands: chain documents that passed the CWL schema
check, and chains as loaded.

Loading the CWL schema (cwl-utils, schema-salad and what they import) costs about 0.3 s, more
than checking a chain does.  A document that passed the check once passes it again as long as
the document, the sub-workflow files it names, and the installed checkers are the same, so
the key of a passed check is a digest of exactly those (see ``model.load``), and ``validate``,
``plan`` and ``run`` of an unchanged chain skip the import.  Failures are never remembered:
their messages are worked out again, with their positions, every time.

The file is ``schema-verdicts.txt`` in ``$CWLBRIDGE_CACHE_DIR``, else
``$XDG_CACHE_HOME/cwlbridge``, else ``~/.cache/cwlbridge``: one hex digest a line, appended
to.  It only ever saves time; anything wrong with it (unreadable, unwritable, cut short)
means checking again.

Reading a big chain costs more than the check: a 1000-step chain takes a quarter of a second
to parse with positions.  A chain that loaded with no finding at all is kept too, pickled in
``chains/`` there, under a digest of its file, where it lives and the loader (see
``model.load``), with the digests of the sub-workflow files it read, which are compared
before it is used.  The newest ``MAX_CHAINS`` are kept.  These files are read only by
cwlbridge, as Python reads its own ``.pyc`` files, from the user's own cache directory.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path
from typing import Any

from cwlbridge.osutil import append_line

VERDICTS_FILE = "schema-verdicts.txt"
#: Past this size the file starts again empty (a digest is 65 bytes: some 60000 chains).
MAX_BYTES = 4 * 1024 * 1024
CHAINS_DIR = "chains"
#: How many loaded chains are kept (the least recently used go first).
MAX_CHAINS = 32


def cache_dir() -> Path:
    """Where cwlbridge keeps what it remembers between commands."""
    explicit = os.environ.get("CWLBRIDGE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cwlbridge"


class SchemaVerdicts:
    """Digests of chain documents that passed the CWL schema check (read once, appended to)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._passed: set[str] | None = None

    @classmethod
    def default(cls) -> SchemaVerdicts:
        return cls(cache_dir() / VERDICTS_FILE)

    def passed(self, key: str) -> bool:
        if self._passed is None:
            try:
                text = self.path.read_text(encoding="ascii", errors="replace")
            except OSError:
                text = ""
            # A line cut short by a crash is not a digest of anything, so it never matches.
            self._passed = set(text.split())
        return key in self._passed

    def remember(self, key: str) -> None:
        if self._passed is not None:
            self._passed.add(key)
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if self.path.stat().st_size > MAX_BYTES:
                    os.truncate(self.path, 0)
            append_line(self.path, f"{key}\n".encode("ascii"))


class LoadedChains:
    """Chains as loaded, pickled one a file by key (``model.load.ChainLoader`` makes the keys)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def default(cls) -> LoadedChains:
        return cls(cache_dir() / CHAINS_DIR)

    def get(self, key: str) -> Any:
        """What was kept under ``key``, or None (never kept, or unreadable: load again)."""
        path = self.directory / f"{key}.pickle"
        try:
            value = pickle.loads(path.read_bytes())
            os.utime(path)  # recently used
        except Exception:  # a damaged entry (any unpickling error) is only a miss
            return None
        return value

    def put(self, key: str, value: Any) -> None:
        with contextlib.suppress(Exception):
            self.directory.mkdir(parents=True, exist_ok=True)
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            tmp = self.directory / f".{key}.{os.getpid()}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self.directory / f"{key}.pickle")
            kept = sorted(self.directory.glob("*.pickle"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
            for old in kept[MAX_CHAINS:]:
                old.unlink()
