"""``linneuron demo``: the sections in order, printed, drawn, and the command's options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

from . import logistic, neuron, perceptron, regression
from .checks import DEFAULT_SEED, Check
from .plots import _plot_logistic, _plot_one_neuron, _plot_perceptron, _plot_regression
from .text import (
    _print_layer_form,
    _print_logistic,
    _print_one_neuron,
    _print_perceptron,
    _print_regression,
    _print_tensor_form,
)

DEFAULT_OUT = "linneuron-demo"


# --------------------------------------------------------------------------------------------------------------
# The command


@dataclass(frozen=True)
class _Section:
    title: str
    compute: Callable[[int, bool | None], Any]  # (seed, progress) -> result
    show: Callable[[Any, IO[str]], None]
    plot: Callable[[Any, Path], list[Path]] | None


SECTIONS = {
    1: _Section(
        "One neuron: weights, threshold, bias",
        lambda seed, progress: neuron.one_neuron(),
        _print_one_neuron,
        _plot_one_neuron,
    ),
    2: _Section("The tensor form: zhat = X w", lambda seed, progress: neuron.tensor_form(), _print_tensor_form, None),
    3: _Section(
        "The layer form: linneuron.Linear", lambda seed, progress: neuron.layer_form(seed), _print_layer_form, None
    ),
    4: _Section(
        "Linear regression: a one-layer network",
        lambda seed, progress: regression.linear_regression(seed, progress=progress),
        _print_regression,
        _plot_regression,
    ),
    5: _Section(
        "The perceptron: AND, OR, and why not XOR",
        lambda seed, progress: perceptron.perceptron(seed, progress=progress),
        _print_perceptron,
        _plot_perceptron,
    ),
    6: _Section(
        "Next steps: logistic regression, a two-class classifier",
        lambda seed, progress: logistic.logistic_regression(seed, progress=progress),
        _print_logistic,
        _plot_logistic,
    ),
}


def run_demo(
    sections: Sequence[int] = tuple(SECTIONS),
    seed: int = DEFAULT_SEED,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> tuple[dict[int, Any], list[Check], list[Path]]:
    """Run, print and (when ``out_dir`` is given and matplotlib is installed) draw the chosen sections.

    Returns the results by section number, every check, and the pictures written.
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"run_demo(): no section {unknown}; sections are {list(SECTIONS)}")

    plot_dir: Path | None = None
    if out_dir is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            err.write(
                "linneuron demo: matplotlib is not installed, so no pictures are drawn "
                "(pip install 'linneuron[plot]' to get them, or pass --no-plot to skip them quietly)\n"
            )
        else:
            plot_dir = Path(out_dir)
            plot_dir.mkdir(parents=True, exist_ok=True)

    from .. import __version__

    out.write(f"linneuron {__version__} demo: the neuron tutorial on linneuron's own kernels (seed {seed})\n")
    results: dict[int, Any] = {}
    checks: list[Check] = []
    pictures: list[Path] = []
    for number in sections:
        section = SECTIONS[number]
        out.write(f"\n== {number}. {section.title} ==\n")
        out.flush()
        result = section.compute(seed, progress)
        section.show(result, out)
        if plot_dir is not None and section.plot is not None:
            drawn = section.plot(result, plot_dir)
            for path in drawn:
                out.write(f"  picture: {path}\n")
            pictures.extend(drawn)
        results[number] = result
        checks.extend(result.checks)
    failed = [check for check in checks if not check.passed]
    out.write(f"\n{len(checks) - len(failed)} of {len(checks)} checks against torch or closed form passed.\n")
    for check in failed:
        out.write(f"FAILED: {check.claim} (max |diff| {check.max_abs_diff:.3g} > {check.tolerance:.1e})\n")
    out.flush()
    return results, checks, pictures


def _matplotlib_missing() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return True
    return False


def _run(args: argparse.Namespace) -> int:
    # An explicit --out asks for pictures: refuse before any work when they cannot be drawn. The default folder
    # is only a place to put them, so there a missing matplotlib is a warning (from run_demo) and the story runs.
    if args.out is not None and not args.no_plot and _matplotlib_missing():
        print(
            f"linneuron demo --out {args.out}: drawing the pictures needs matplotlib, which is not installed; "
            "install it with: pip install 'linneuron[plot]' (or pass --no-plot to run without pictures)",
            file=sys.stderr,
        )
        return 2
    _, checks, _ = run_demo(
        sections=tuple(dict.fromkeys(args.section)) if args.section else tuple(SECTIONS),
        seed=args.seed,
        out_dir=None if args.no_plot else (DEFAULT_OUT if args.out is None else args.out),
        progress=False if args.no_progress else None,
    )
    return 0 if all(check.passed for check in checks) else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``demo`` subcommand's options on ``parser``."""
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help=f"folder for the pictures (PNG), created if needed (default: {DEFAULT_OUT}); an explicit --out "
        "needs matplotlib and fails without it, the default only warns",
    )
    parser.add_argument("--no-plot", action="store_true", help="draw no pictures (matplotlib is then not needed)")
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"torch.manual_seed for the layers' random initial weights (default: {DEFAULT_SEED}, as in the tutorial)",
    )
    parser.add_argument(
        "--section",
        type=int,
        nargs="+",
        choices=sorted(SECTIONS),
        metavar="N",
        help="run only these sections (1-6; default: all)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (they show only on a terminal)")
    parser.set_defaults(run=_run)
