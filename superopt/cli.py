"""The ``superopt`` command line. Each subcommand lives in ``superopt/commands/<name>.py``
and defines ``HELP`` (one line), ``add_args(parser)`` and ``run(args) -> int``.

Every command's ``args`` carries ``verbosity`` (-1 with ``-q``, 0 by default, +1 per ``-v``),
passed explicitly: there is no global logging switch. With ``--json`` an error is one JSON
object on stdout, ``{"error": MESSAGE, "kind": KIND, "command": NAME}``, with the exit
status a plain error has: 2 for usage and input errors, 130 when interrupted, 1 for a bug."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback

from superopt import debug

COMMANDS = ["new", "show", "tune", "run", "script", "calibrate", "cache", "capture", "tune-cache", "bench", "plan", "fidelity"]


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2. ``kind`` names the
    class of problem in JSON errors ("input" unless a command says more, e.g. "cache")."""

    def __init__(self, message: str, kind: str = "input"):
        super().__init__(message)
        self.kind = kind


class UsageError(Exception):
    """A bad flag or value, raised by the parser instead of exiting (so ``--json`` can format it)."""


def _available() -> dict:
    mods = {}
    for name in COMMANDS:
        try:
            mods[name] = importlib.import_module(f"superopt.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as e:
            if e.name != f"superopt.commands.{name.replace('-', '_')}": raise
    return mods


class _Parser(argparse.ArgumentParser):
    """A bad flag or value is one line (no usage block) and exit status 2."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: error: {message}")


def add_verbosity(p: argparse.ArgumentParser, top: bool) -> None:
    """``-v``/``-q`` on the top parser and on every command (``superopt -v tune`` and
    ``superopt tune -v`` both work); a command's own copy does not reset the top one."""
    default = 0 if top else argparse.SUPPRESS
    p.add_argument("-v", "--verbose", action="count", default=default, help="more output (repeat for more)")
    p.add_argument("-q", "--quiet", action="count", default=default, help="only results and errors: no progress")


def _wants_json(argv: list[str]) -> bool:
    """``--json`` among superopt's own arguments (before a ``--`` that starts a script's)."""
    own = argv[:argv.index("--")] if "--" in argv else argv
    return "--json" in own


def _command_in(argv: list[str], mods: dict) -> str | None:
    """The subcommand named in ``argv`` (for a usage error's JSON), if any."""
    return next((a for a in argv if a in mods), None)


def _fail(message: str, kind: str, command: str | None, as_json: bool, status: int) -> int:
    if as_json: print(json.dumps({"error": message, "kind": kind, "command": command}))
    else: print(message, file=sys.stderr)
    return status


def _parser(mods: dict) -> _Parser:
    import superopt
    p = _Parser(prog="superopt", description="Constraint-solver-driven kernel superoptimizer.",
                epilog="--json on a command prints one JSON object on stdout (errors too: "
                       '{"error": ..., "kind": ..., "command": ...}); progress goes to stderr.')
    p.add_argument("--version", action="version", version=f"superopt {superopt.__version__}")
    add_verbosity(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in mods.items():
        sp = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_args(sp)
        add_verbosity(sp, top=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    mods = _available()
    p = _parser(mods)
    try: args = p.parse_args(argv)
    except UsageError as e: return _fail(str(e), "usage", _command_in(argv, mods), _wants_json(argv), 2)
    except SystemExit as e: return e.code if isinstance(e.code, int) else 2  # --help / --version: 0
    if not args.command:
        p.print_help()
        return 2
    args.verbosity = -1 if args.quiet else args.verbose
    as_json = lambda: bool(getattr(args, "json", False))  # noqa: E731 - a command may set it late (plan SCRIPT --json)
    try:
        return int(debug.run_with_env(mods[args.command].run, args) or 0)   # SUPEROPT_DEBUG, read once
    except UserError as e:
        return _fail(f"superopt {args.command}: error: {e}" if not as_json() else str(e), e.kind, args.command, as_json(), 2)
    except UsageError as e:
        return _fail(str(e), "usage", args.command, as_json(), 2)
    except KeyboardInterrupt:
        return _fail("superopt: interrupted", "interrupted", args.command, as_json(), 130)
    except BrokenPipeError:  # output piped into e.g. `head`, which exited: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:  # noqa: BLE001 - a bug: the traceback on stderr, one JSON object on stdout
        if not as_json(): raise
        traceback.print_exc()
        return _fail(f"{type(e).__name__}: {e}", "internal", args.command, True, 1)


if __name__ == "__main__":
    sys.exit(main())
