"""The errors a user meets, and their one line of text: user errors are reported in one line,
however long the message they wrap, and without a traceback (`tf_lottery.cli.errors`)."""

from __future__ import annotations


class UserError(RuntimeError):
    """Something a run met that is not a bug of tf_lottery (a diverged loss, a lost worker): one line.
    Bad input is a ValueError, reported the same way."""


def first_line(error, limit: int = 2000) -> str:
    """The first non-empty line of an exception's message (TF's `.message` when it has one), at most `limit` long."""
    text = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    line = lines[0] if lines else (type(error).__name__ if isinstance(error, BaseException) else "")
    return line if len(line) <= limit else line[: limit - 3] + "..."
