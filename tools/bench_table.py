"""A Markdown table of a ``linneuron bench --json`` result, printed or put between markers in a file (README.md).

    python tools/bench_table.py docs/bench-cpu-zen3.json --threads 1 --machine "AMD EPYC Zen 3"
    python tools/bench_table.py docs/bench-cpu-zen3.json --threads 1 --machine "..." --update README.md

--update replaces the text between ``<!-- bench-table:begin -->`` and ``<!-- bench-table:end -->``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BEGIN, END = "<!-- bench-table:begin -->", "<!-- bench-table:end -->"


def table(data: dict, threads: list[int] | None, machine: str, source: str) -> str:
    """One line per (op, shape, dtype): the speed-up at each thread count and the goal, in the run's order."""
    info = data["machine"]
    counts = sorted({r["threads"] for r in data["results"]} if threads is None else set(threads))
    rows: dict[tuple[str, str, str], dict] = {}
    for r in data["results"]:
        key = (r["op"], r["shape"], r["dtype"])
        entry = rows.setdefault(key, {"goal": r["goal"]})
        entry[r["threads"]] = "error" if r.get("error") else f"{r['speedup']:.2f}"
    load = (info.get("load_average_at_start"), info.get("load_average_at_end"))
    load_text = " to ".join(f"{x:.1f}" for x in load if x is not None)
    head = (
        f"Measured on **{machine}** ({info['logical_cpus']} logical CPUs, linneuron's `{info['isa']}` kernels), "
        f"torch {info['torch']} ({info['torch_blas']}), 1-minute load average {load_text}; "
        f"`{source}`. Speed-up = torch time / linneuron time (> 1: linneuron is faster).\n\n"
    )
    lines = [
        "| op | shape (batch x in -> out) | dtype | " + " | ".join(f"{n} thr" for n in counts) + " | goal |",
        "|---|---|---|" + "---|" * len(counts) + "---|",
    ]
    for (op, shape, dtype), entry in rows.items():
        cells = [entry.get(n, "-") for n in counts]
        goal = entry["goal"]
        goal_text = "-" if goal is None else (f">= {goal:g} " + ("met" if all(
            c not in ("-", "error") and float(c) >= goal for c in cells) else "**missed**"))  # fmt: skip
        lines.append(f"| {op} | {shape} | {dtype} | " + " | ".join(cells) + f" | {goal_text} |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", help="a file written by linneuron bench --json")
    parser.add_argument("--threads", help="comma-separated thread counts to show (default: all in the run)")
    parser.add_argument("--machine", required=True, help="the CPU, named by hand (/proc/cpuinfo is often vague)")
    parser.add_argument("--source", default="linneuron bench --json FILE", help="the command that made the run")
    parser.add_argument("--update", metavar="FILE", help="replace the table between the markers in FILE")
    args = parser.parse_args(argv)
    data = json.loads(Path(args.json).read_text())
    threads = [int(t) for t in args.threads.split(",")] if args.threads else None
    text = table(data, threads, args.machine, args.source)
    if not args.update:
        sys.stdout.write(text)
        return 0
    target = Path(args.update)
    old = target.read_text()
    if BEGIN not in old or END not in old:
        print(f"{target}: no {BEGIN} ... {END} markers", file=sys.stderr)
        return 2
    before, rest = old.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    target.write_text(before + BEGIN + "\n" + text + END + after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
