"""Live progress of a ticket search: one bar per training stage, updated once per evaluation period.

Updates come from the evaluation hook (every `eval_every` iterations), never per batch, so the
bar costs nothing measurable. On a terminal the bar redraws one line in place; when output is
piped to a file it prints one line per `line_every_percent` of the stage instead.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, TextIO

MODES = ("quiet", "normal", "verbose")


class Progress:
    """Reports training progress of each (round, stage); `mode` is quiet, normal or verbose.

    normal: a bar per stage (iteration/total, train loss); verbose: also one line per
    evaluation with validation loss and test accuracy; quiet: nothing.
    """

    def __init__(
        self,
        mode: str = "normal",
        stream: Optional[TextIO] = None,
        is_tty: Optional[bool] = None,
        line_every_percent: int = 25,
        width: int = 24,
        before_first: Optional[Callable[[], None]] = None,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown progress mode {mode!r}; allowed: {', '.join(MODES)}")
        self.mode = mode
        self.stream = stream if stream is not None else sys.stdout
        if is_tty is None:
            is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.is_tty = is_tty
        self.line_every_percent = max(1, int(line_every_percent))
        self.width = width
        self._label = ""
        self._total = 0
        self._next_percent = 0
        self._drawn = False
        self._before_first = before_first  # e.g. a header line that waits until training starts

    def begin(self, round_index: int, stage: str, start_iteration: int, total_iterations: int) -> None:
        """A stage starts (or resumes at `start_iteration`) and will run to `total_iterations`."""
        if self._before_first is not None:
            self._before_first()
            self._before_first = None
        self._label = f"round {round_index:2d} {stage:<13s}"
        self._total = max(1, int(total_iterations))
        done = 100 * start_iteration // self._total
        self._next_percent = (done // self.line_every_percent + 1) * self.line_every_percent
        self._drawn = False

    def update(self, evaluation) -> None:
        """Called after each evaluation (an object with iteration, train_loss, validation_loss, test_accuracy)."""
        if self.mode == "quiet":
            return
        iteration = int(evaluation.iteration)
        if self.mode == "verbose":
            self._clear()
            self._write(
                f"{self._label} it {iteration:>{len(str(self._total))}d}/{self._total} | "
                f"train loss {evaluation.train_loss:.4f} | val loss {evaluation.validation_loss:.4f} | "
                f"test acc {evaluation.test_accuracy:.4f}\n"
            )
            return
        line = self.bar(iteration, float(evaluation.train_loss))
        if self.is_tty:
            self._write("\r" + line)
            self._drawn = True
            return
        percent = 100 * iteration // self._total
        if percent >= self._next_percent or iteration >= self._total:
            self._write(line + "\n")
            self._next_percent = (percent // self.line_every_percent + 1) * self.line_every_percent

    def end(self) -> None:
        """The stage finished: clear the bar so the round's summary line takes its place."""
        self._clear()

    def bar(self, iteration: int, train_loss: float) -> str:
        """The text of the bar at `iteration` of the current stage."""
        fraction = min(1.0, max(0.0, iteration / self._total))
        filled = int(round(fraction * self.width))
        digits = len(str(self._total))
        return (
            f"{self._label} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{iteration:>{digits}d}/{self._total} {100 * fraction:3.0f}% | loss {train_loss:.4f}"
        )

    def _clear(self) -> None:
        if self._drawn:
            self._write("\r\033[K")
            self._drawn = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
