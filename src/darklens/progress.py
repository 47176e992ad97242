"""Progress bars that stay readable in a log: every darklens progress bar goes through here.

``progress_bar(total, desc, unit)`` returns a tqdm bar when the stream (stderr by default) is a
terminal, and otherwise a ``LineProgress`` that writes ONE line when the stage ends (an epoch,
a simulation, a scoring pass): ``desc: 120/120 batch in 4.2 s (loss=0.0123)``. A log of
``make demo > log 2>&1`` or of CI then holds one line per epoch or stage instead of thousands
of carriage-return redraws. Both kinds take the same calls: ``update(n)``, ``set_postfix``,
``close`` and use as a context manager or an iterable wrapper.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any


class LineProgress:
    """A progress 'bar' for logs: silent while it runs, one line when closed."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None,
                 desc: str = "", unit: str = "it", file: IO[str] | None = None,
                 disable: bool = False):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            self.total = len(iterable)  # type: ignore[arg-type]
        self.file, self.disable = file, disable
        self.n = 0
        self.postfix = ""
        self.start = time.perf_counter()
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += int(n)

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.disable:
            return
        done = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        extra = f" ({self.postfix})" if self.postfix else ""
        head = f"{self.desc}: " if self.desc else ""
        stream = self.file if self.file is not None else sys.stderr
        print(f"{head}{done} {self.unit} in {time.perf_counter() - self.start:.1f} s{extra}",
              file=stream, flush=True)

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LineProgress: nothing to iterate")
        try:
            for item in self.iterable:
                yield item
                self.n += 1
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:  # the stage failed: its error is the one line to read
            self.closed = True
        self.close()


def is_terminal(stream: IO[str] | None = None) -> bool:
    """True when ``stream`` (default: stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", disable: bool = False, leave: bool = True,
                 file: IO[str] | None = None) -> Any:
    """A tqdm bar on a terminal, a one-line-per-stage ``LineProgress`` otherwise."""
    if is_terminal(file):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave,
                    file=file)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, file=file, disable=disable)
