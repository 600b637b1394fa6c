"""What the generated docs share: write the page, or with ``--check`` exit 1 when it is out of date."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(target: Path, text: str, command: str, argv: list[str] | None = None) -> int:
    """Write ``text`` to ``target``; with ``--check`` in ``argv`` (``sys.argv[1:]`` when None) only compare,
    and say which command rewrites it."""
    args = sys.argv[1:] if argv is None else argv
    if "--check" in args:
        current = target.read_text() if target.exists() else ""
        if current != text:
            print(f"{target} is out of date: run {command}", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    return 0
