"""The ``linneuron`` command as a user runs it: ``python -m linneuron``, help texts, pictures on request."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Runs the command in a fresh interpreter where `import matplotlib` fails, as on a plain `pip install .`.
_WITHOUT_MATPLOTLIB = (
    "import sys; sys.modules['matplotlib'] = None; from linneuron.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _run(args: list[str], cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)


def test_python_dash_m_info():
    completed = _run([sys.executable, "-m", "linneuron", "info", "--json"])
    assert completed.returncode == 0, completed.stderr
    assert '"version"' in completed.stdout and '"isa"' in completed.stdout


def test_python_dash_m_bench_quick():
    pytest.importorskip("torch")
    completed = _run([sys.executable, "-m", "linneuron", "bench", "--quick", "--threads", "1",
                      "--filter", "256x256", "--seconds", "0.2"])  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "speed-up" in completed.stdout and "256x256->256" in completed.stdout


def test_python_dash_m_demo(tmp_path):
    pytest.importorskip("torch")
    completed = _run([sys.executable, "-m", "linneuron", "demo", "--no-plot", "--section", "2"], cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert (
        "== 2. The tensor form" in completed.stdout and "checks against torch or closed form passed" in completed.stdout
    )
    assert list(tmp_path.iterdir()) == []  # --no-plot writes nothing


def test_python_dash_m_without_command_shows_usage():
    completed = _run([sys.executable, "-m", "linneuron"])
    assert completed.returncode == 2 and "usage: linneuron" in completed.stderr


def test_explicit_out_without_matplotlib_fails_naming_the_fix(tmp_path):
    out_dir = tmp_path / "pictures"
    completed = _run([sys.executable, "-c", _WITHOUT_MATPLOTLIB, "demo", "--out", str(out_dir), "--section", "1"])
    assert completed.returncode != 0
    assert "pip install 'linneuron[plot]'" in completed.stderr and "matplotlib" in completed.stderr
    assert completed.stdout == "" and not out_dir.exists()  # refused before any work


def test_bare_demo_without_matplotlib_warns_and_goes_on(tmp_path):
    pytest.importorskip("torch")
    completed = _run([sys.executable, "-c", _WITHOUT_MATPLOTLIB, "demo", "--section", "1"], cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert "matplotlib is not installed" in completed.stderr and "linneuron[plot]" in completed.stderr
    assert "checks against torch or closed form passed" in completed.stdout
    assert list(tmp_path.iterdir()) == []  # no picture folder


def test_no_plot_wins_over_out_without_matplotlib(tmp_path):
    pytest.importorskip("torch")
    completed = _run([sys.executable, "-c", _WITHOUT_MATPLOTLIB, "demo", "--no-plot", "--out", str(tmp_path / "p"),
                      "--section", "2"])  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "matplotlib" not in completed.stderr


@pytest.mark.parametrize(
    ("command", "examples"),
    [
        ("bench", ["    linneuron bench                 # about a minute, with progress",
                   "    linneuron bench --quick         # a few seconds' smoke run"]),
        ("demo", ["  linneuron demo                        all sections, pictures into ./linneuron-demo",
                  "  linneuron demo --no-plot --section 4  one section, no pictures"]),
    ],
)  # fmt: skip
def test_help_shows_examples_on_their_own_lines(command, examples):
    completed = _run([sys.executable, "-m", "linneuron", command, "--help"])
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    for example in examples:
        assert example in lines, f"{example!r} is not a line of `linneuron {command} --help`"
