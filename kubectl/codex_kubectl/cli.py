"""`kubectl-codex`: the kubectl plugin for CodexSessions and their approvals.

kubectl runs any `kubectl-codex` on PATH as `kubectl codex ...`. It talks to
the API server with your kubeconfig, so a decision is recorded as yours and
the API server's admission policies judge it as yours.

Exit codes: 0 done, 1 the API server refused or something is missing,
2 a usage error."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

from . import commands, verify
from .client import CodexApi, KubeError, SetupError, connect
from .commands import EXIT_ERROR, EXIT_OK, EXIT_USAGE, Io, NotFound
from .decision import reason_problem

PROG = "kubectl-codex"
OUTPUTS = ("json", "yaml", "wide", "name")

Handler = Callable[[CodexApi, argparse.Namespace, Io], int]


def _version() -> str:
    try:
        return metadata.version("codex-k8s-operator")
    except metadata.PackageNotFoundError:
        return "unknown"


def _connection_options(parser: argparse.ArgumentParser, *, inherited: bool) -> None:
    """--kubeconfig/--context/-n, accepted before or after the command. On the
    subcommands they default to SUPPRESS, so they do not overwrite a value
    given before the command."""
    default: Any = argparse.SUPPRESS if inherited else None
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--kubeconfig", default=default, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    group.add_argument("--context", default=default, help="kubeconfig context (default: the current context)")
    group.add_argument(
        "-n",
        "--namespace",
        default=default,
        help="namespace (default: the context's namespace, else codex-sessions)",
    )


def _command(
    commands_: argparse._SubParsersAction[argparse.ArgumentParser], name: str, handler: Handler, help_: str
) -> argparse.ArgumentParser:
    parser = commands_.add_parser(name, help=help_, description=help_)
    parser.set_defaults(handler=handler, command_parser=parser)
    _connection_options(parser, inherited=True)
    return parser


def _listing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    parser.add_argument(
        "-o", "--output", choices=OUTPUTS, help="output format: json, yaml, wide (more columns) or name"
    )


def _decide(decision: commands.Decision) -> Handler:
    return lambda api, args, io: commands.cmd_decide(api, args, io, decision)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Codex sessions and their approvals, with your own kubeconfig (kubectl codex ...).",
        epilog="Exit codes: 0 done, 1 refused by the API server or not found, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    _connection_options(parser, inherited=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _listing(_command(sub, "list", commands.cmd_list, "list CodexSessions"))

    describe = _command(
        sub,
        "describe",
        commands.cmd_describe,
        "a session or approval: the whole spec that runs and its digest, whether the approval "
        "still matches it, status, result, usage, cost, events",
    )
    describe.add_argument("name", metavar="NAME", help="a CodexSession (or its ApprovalRequest)")

    logs = _command(sub, "logs", commands.cmd_logs, "the runner pod's log of a session, made readable")
    logs.add_argument("name", metavar="NAME", help="a CodexSession (or its ApprovalRequest)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep streaming until the runner ends")
    logs.add_argument("--raw", action="store_true", help="the log lines as they are (Codex's JSONL)")

    _listing(_command(sub, "pending", commands.cmd_pending, "ApprovalRequests waiting for a decision"))

    approve = _command(sub, "approve", _decide("Approved"), "approve a session's ApprovalRequest as yourself")
    approve.add_argument("name", metavar="NAME", help="the ApprovalRequest or its CodexSession")
    approve.add_argument("--reason", help="why (optional; recorded with the decision)")
    approve.add_argument(
        "--digest",
        metavar="SHA256",
        help=(
            "approve only if the request is for this spec digest, as `kubectl codex describe` shows it "
            f"(sha256:..., at least {verify.MIN_DIGEST_HEX} hex digits): so what you approve is what you read"
        ),
    )

    approve.add_argument(
        "--for-session",
        action="store_true",
        help=(
            "an action's request only: let Codex repeat this action in the conversation without "
            "asking again (accept for this session), where Codex offers it"
        ),
    )

    deny = _command(sub, "deny", _decide("Denied"), "deny a session's ApprovalRequest as yourself")
    deny.add_argument("name", metavar="NAME", help="the ApprovalRequest or its CodexSession")
    deny.add_argument("--reason", required=True, help="why (required; the requester sees it)")
    return parser


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Arguments, checked: raises SystemExit(2) with a usage message on bad input."""
    args = build_parser().parse_args(argv)
    if args.command in ("approve", "deny"):
        problem = reason_problem("Approved" if args.command == "approve" else "Denied", args.reason)
        if problem:
            args.command_parser.error(problem)
    if getattr(args, "digest", None) is not None:
        digest = verify.digest_argument(args.digest)
        if digest is None:
            args.command_parser.error(
                f"--digest {args.digest!r} is not a spec digest: sha256: and at least "
                f"{verify.MIN_DIGEST_HEX} hex digits, as `kubectl codex describe` shows it"
            )
        args.digest = digest
    return args


def main(argv: Sequence[str] | None = None, io: Io | None = None) -> int:
    io = io or Io()
    try:
        args = parse(argv)
    except SystemExit as exc:  # --help/--version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    try:
        target = connect(args.kubeconfig, args.context)
    except SetupError as err:
        io.error(f"error: {err}")
        return EXIT_ERROR
    if not args.namespace:
        args.namespace = target.namespace
    handler: Handler = args.handler
    try:
        return handler(CodexApi(target.api_client), args, io)
    except NotFound as err:
        io.error(f"error: {err}")
        return EXIT_ERROR
    except KubeError as err:
        io.error(err.describe())
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`kubectl codex logs x | head`): no second traceback at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
