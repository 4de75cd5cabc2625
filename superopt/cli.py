"""The ``superopt`` command line. Each subcommand lives in ``superopt/commands/<name>.py``
and defines ``HELP`` (one line), ``add_args(parser)`` and ``run(args) -> int``."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ["new", "show", "tune", "run", "calibrate", "cache", "capture", "tune-cache", "bench", "plan", "fidelity"]


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


def _available() -> dict:
    mods = {}
    for name in COMMANDS:
        try:
            mods[name] = importlib.import_module(f"superopt.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as e:
            if e.name != f"superopt.commands.{name.replace('-', '_')}": raise
    return mods


class _Parser(argparse.ArgumentParser):
    """A bad flag or value is one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    mods = _available()
    p = _Parser(prog="superopt", description="Constraint-solver-driven kernel superoptimizer.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in mods.items():
        sp = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_args(sp)
    try: args = p.parse_args(argv)
    except SystemExit as e: return e.code if isinstance(e.code, int) else 2  # --help is 0, a bad flag 2
    if not args.command:
        p.print_help()
        return 2
    try:
        return int(mods[args.command].run(args) or 0)
    except UserError as e:
        print(f"superopt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("superopt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which exited: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
