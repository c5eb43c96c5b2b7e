"""Sizes for people, one convention everywhere (``data ls``, ``report``, the HTML report)."""

from __future__ import annotations


def human_size(size: int) -> str:
    """Bytes below 1 kB, else three significant digits in kB/MB/GB/TB/PB (powers of 1000, as Rucio)."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 999.5 or unit == "PB":
            return f"{value:.3g} {unit}"
    raise AssertionError("unreachable")
