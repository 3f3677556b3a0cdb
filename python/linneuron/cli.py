"""The ``linneuron`` command: ``info`` (what was built), ``bench`` (speed against torch), ``demo`` (the tutorial)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    from . import info

    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        width = max(len(key) for key in data)
        for key, value in data.items():
            print(f"{key:<{width}}  {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    # Raw descriptions: each command's help text keeps its example lines as written (argparse would reflow them).
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="linneuron", description=__doc__, formatter_class=raw)
    commands = parser.add_subparsers(dest="command", required=True)

    info_parser = commands.add_parser(
        "info", help="print what this build contains and uses", description="print what this build contains and uses"
    )
    info_parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info_parser.set_defaults(run=_cmd_info)

    # Subcommands that live in their own modules register their arguments there (loaded only if present).
    for name in ("bench", "demo"):
        try:
            module = importlib.import_module(f"linneuron.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"linneuron.{name}":
                raise
            continue
        module.add_arguments(
            commands.add_parser(name, help=module.HELP, description=module.__doc__, formatter_class=raw)
        )

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
