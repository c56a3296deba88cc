"""The ``codex-operator`` command line.

Subcommands are grouped (``config validate``, ``config show``, ...). Each group
has a ``_add_<group>_commands`` function that registers its parsers and binds
every leaf parser to its handler with ``set_defaults(handler=...)``; a new
group is one more entry in ``_COMMAND_GROUPS``. Handlers take the parsed
arguments and return the process exit code, so ``main`` can be called from
tests without catching ``SystemExit``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from codex_api.config import ConfigError, load_config, redacted_dict

from .run import add_run_command

Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2  # argparse's own status for usage errors


def _config_validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for path in args.files:
        try:
            load_config(path)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            status = EXIT_INVALID
        else:
            print(f"ok: {path}")
    return status


def _config_show(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    print(json.dumps(redacted_dict(cfg), indent=2))
    return EXIT_OK


def _add_config_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser(
        "config",
        help="check and inspect the TOML configuration file",
        description="Check and inspect the TOML configuration file (config/codex-mcp.toml).",
    )
    actions = group.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    validate = actions.add_parser(
        "validate",
        help="validate configuration files",
        description=(
            "Validate each FILE. Prints 'ok: FILE' for a valid file and one line per problem "
            "(FILE: key.path: reason) on stderr otherwise; exits 1 if any file is invalid."
        ),
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="TOML configuration file")
    validate.set_defaults(handler=_config_validate)

    show = actions.add_parser(
        "show",
        help="print the effective configuration as JSON",
        description="Print the effective configuration of FILE (defaults applied, ~ expanded) as JSON.",
    )
    show.add_argument("file", metavar="FILE", help="TOML configuration file")
    show.set_defaults(handler=_config_show)


_COMMAND_GROUPS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_config_commands,
    add_run_command,
]


def _version() -> str:
    try:
        return metadata.version("codex-k8s-operator")
    except metadata.PackageNotFoundError:
        return "unknown"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codex-operator",
        description="Kubernetes operator running OpenAI Codex sessions in sandboxed runner pods.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_commands in _COMMAND_GROUPS:
        add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits on --help/--version (0) and usage errors (2); turn
        # that into a return value so callers get an int either way.
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Handler = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        # The reader went away (`config show | head`); silence the interpreter's
        # flush at exit, which would otherwise print a second traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_INVALID
