"""One line of error text: user errors are reported in one line, however long the message they wrap."""

from __future__ import annotations


def first_line(error, limit: int = 2000) -> str:
    """The first non-empty line of an exception's message (TF's `.message` when it has one), at most `limit` long."""
    text = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    line = lines[0] if lines else (type(error).__name__ if isinstance(error, BaseException) else "")
    return line if len(line) <= limit else line[: limit - 3] + "..."
