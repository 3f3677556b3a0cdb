"""The demo's checks against references, its progress bars, and the seed the tutorial uses."""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass
from typing import IO, Any, Callable, TypeVar

import numpy as np

DEFAULT_SEED = 66  # the seed the tutorial uses for torch.manual_seed


# --------------------------------------------------------------------------------------------------------------
# Checks and the progress bar


@dataclass(frozen=True)
class Check:
    """One comparison of a linneuron result with a reference no one here wrote (torch, or a closed form)."""

    claim: str
    max_abs_diff: float
    tolerance: float = 0.0

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance  # a NaN difference fails


def _as_float64(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _max_abs_diff(ours: Any, reference: Any) -> float:
    """Largest absolute difference; infinite when the shapes differ, NaN where only one side is NaN."""
    a, b = _as_float64(ours), _as_float64(reference)
    if a.shape != b.shape:
        return math.inf
    if a.size == 0:
        return 0.0
    both_nan = np.isnan(a) & np.isnan(b)
    return float(np.max(np.where(both_nan, 0.0, np.abs(a - b))))


def _check(claim: str, ours: Any, reference: Any, tolerance: float = 0.0) -> Check:
    return Check(claim, _max_abs_diff(ours, reference), tolerance)


class ProgressBar:
    """A one-line progress bar for training loops, redrawn in place on a terminal and silent otherwise.

    It redraws only when the shown percentage changes, so a long loop costs at most 101 writes.

    >>> import io
    >>> stream = io.StringIO()
    >>> with ProgressBar(4, "fit", stream=stream, enabled=True, width=4) as bar:
    ...     for i in range(4):
    ...         bar.update(i + 1)
    >>> stream.getvalue().splitlines()[-1].split("\\r")[-1]
    'fit [####] 100%  4/4'
    """

    def __init__(
        self, total: int, label: str, *, stream: IO[str] | None = None, enabled: bool | None = None, width: int = 24
    ) -> None:
        if total < 1:
            raise ValueError(f"ProgressBar(): total must be at least 1, got {total}")
        self.total = total
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.width = width
        self._shown_percent = -1
        self._drawn = False
        self._last_length = 0

    def update(self, done: int, note: str = "") -> None:
        if not self.enabled:
            return
        percent = 100 * done // self.total
        if percent == self._shown_percent:
            return
        self._shown_percent = percent
        filled = self.width * done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        line = f"{self.label} [{bar}] {percent:3d}%  {done}/{self.total}"
        if note:
            line += f"  {note}"
        # Pad over the previous line's tail when this one is shorter (the note can shrink).
        self.stream.write("\r" + line.ljust(self._last_length))
        self._last_length = len(line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_F = TypeVar("_F", bound=Callable[..., Any])


def _keeps_global_rng(fn: _F) -> _F:
    """Run ``fn`` on a copy of torch's CPU random state: a section seeds torch, the caller's stream is untouched."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.random.fork_rng(devices=[]):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _bar(total: int, label: str, progress: bool | None) -> ProgressBar:
    return ProgressBar(total, label, enabled=None if progress is None else progress)
