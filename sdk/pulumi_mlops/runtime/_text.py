"""Text helpers shared by the runtime's log lines and error messages."""

from __future__ import annotations

__all__ = ["one_line"]


def one_line(text: object, limit: int = 300) -> str:
    """``text`` as one log line of at most ``limit`` characters: whitespace runs (the newlines
    of a YAML error or a client's message) become one space, and a longer text is cut with
    "…"."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"
