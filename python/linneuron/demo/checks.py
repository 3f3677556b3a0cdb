"""The demo's checks against references, its progress bars, and the seed the tutorial uses."""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass
from typing import IO, Any, Callable, TypeVar

import numpy as np
from tqdm import tqdm

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


class ProgressBar(tqdm):
    """A tqdm bar for a training loop of ``total`` epochs, drawn on a terminal and silent otherwise.

    ``enabled=None`` (the default) draws only when ``stream`` (default: stderr) is a terminal; True or False
    force it. ``bar.update(done, note)`` takes the epochs done so far (not an increment) and a short note.

    >>> import io
    >>> stream = io.StringIO()
    >>> with ProgressBar(4, "fit", stream=stream, enabled=True) as bar:
    ...     for i in range(4):
    ...         bar.update(i + 1, "loss 0.5")
    >>> final = stream.getvalue().split("\\r")[-1]
    >>> "fit" in final and "100%" in final and "4/4" in final and "loss 0.5" in final
    True
    """

    def __init__(self, total: int, label: str, *, stream: IO[str] | None = None, enabled: bool | None = None):
        if total < 1:
            raise ValueError(f"ProgressBar(): total must be at least 1, got {total}")
        # tqdm's disable=None is "draw only on a terminal"; it redraws at most every 0.1 s, so loops stay cheap.
        super().__init__(
            total=total,
            desc=label,
            file=sys.stderr if stream is None else stream,
            disable=None if enabled is None else not enabled,
            dynamic_ncols=True,
        )

    def update(self, done: int, note: str = "") -> None:  # type: ignore[override]
        if self.disable:
            return
        if note:
            self.set_postfix_str(note, refresh=False)
        super().update(done - self.n)


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
