"""``codex-gateway``: serve the MCP gateway over streamable HTTP on /mcp
(or over stdio for one local user), with /metrics on a separate port."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import sys
from collections.abc import Sequence

import uvicorn
from mcp.server.transport_security import TransportSecuritySettings

from codex_api.config import CodexMCPConfig, ConfigError, load_config, parse_config

from .auth import TokenFileError, TokenReviewer, TokenStore, Verifier, VerifierChain
from .guard import Guard, redact_url, redis_url_from_env
from .kube import SessionApi, load_client
from .logs import setup_logging
from .mcp_sessions import SessionDirectory, share_sessions
from .metrics import GatewayMetrics
from .observer import SessionObserver
from .server import build_server
from .service import DEFAULT_WAIT_SECONDS, Gateway, GatewaySettings
from .session_cache import SessionCache

log = logging.getLogger("codex_gateway")

LOCAL_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
LOCAL_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


def _positive(value: str) -> float:
    number = float(value)
    if not 0 < number <= 3600:
        raise argparse.ArgumentTypeError(f"must be in (0, 3600], got {value}")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 0 < number < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return number


def _port_or_off(value: str) -> int:
    return 0 if value == "0" else _port(value)


def _csv(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if any(len(v) > 253 or " " in v for v in items):
        raise argparse.ArgumentTypeError(f"not a comma-separated list of hosts/origins: {value!r}")
    return items


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="codex-gateway", description=__doc__)
    p.add_argument("--config", help="the TOML configuration file (default: built-in defaults)")
    p.add_argument("--namespace", required=True, help="namespace of the CodexSessions")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    p.add_argument(
        "--transport",
        choices=["http", "stdio"],
        default="http",
        help="http: streamable HTTP on /mcp with bearer tokens (default); stdio: one local user",
    )
    auth = p.add_argument_group("identity (http)")
    auth.add_argument(
        "--tokens-file", help="YAML/JSON mapping token -> user (or {user, groups}); a mounted Secret"
    )
    auth.add_argument(
        "--token-review",
        action="store_true",
        help="also accept tokens the cluster authenticates (TokenReview; needs create tokenreviews)",
    )
    auth.add_argument(
        "--token-audience",
        action="append",
        default=[],
        help="audience a TokenReview must confirm (repeatable; --token-review needs one)",
    )
    auth.add_argument(
        "--token-review-any-audience",
        action="store_true",
        help="DANGEROUS: TokenReview without an audience, accepting every token the cluster "
        "authenticates (any pod's ServiceAccount token) as a gateway identity",
    )
    stdio = p.add_argument_group("identity (stdio)")
    stdio.add_argument("--user", help="the user stdio calls act as (default: the OS user)")
    stdio.add_argument("--groups", type=_csv, default=[], help="comma-separated groups of --user")
    http = p.add_argument_group("http")
    http.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    http.add_argument("--port", type=_port, default=8080, help="port to listen on (default 8080)")
    http.add_argument(
        "--public-url",
        help="the URL clients use for /mcp (OAuth resource metadata; default http://HOST:PORT/mcp)",
    )
    http.add_argument(
        "--allowed-hosts",
        type=_csv,
        default=[],
        help="Host header values accepted besides localhost (e.g. codex-gateway.codex-system.svc:*)",
    )
    http.add_argument(
        "--allowed-origins",
        type=_csv,
        default=[],
        help="Origin header values accepted besides localhost (browsers; e.g. https://inspector.example.com)",
    )
    http.add_argument(
        "--metrics-port", type=_port_or_off, default=9090, help="Prometheus /metrics port (0: off)"
    )
    http.add_argument("--metrics-host", default=None, help="address of /metrics (default: --host)")
    p.add_argument(
        "--wait-seconds",
        type=_positive,
        default=DEFAULT_WAIT_SECONDS,
        help=f"how long a tool call waits for the turn before answering 'running' (default {DEFAULT_WAIT_SECONDS:g})",
    )
    p.add_argument(
        "--observe-seconds",
        type=_positive,
        default=5.0,
        help="how often sessions are listed for metrics and budgets (default 5)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


async def serve(
    args: argparse.Namespace,
    config: CodexMCPConfig,
    tokens: TokenStore | None,
    guard: Guard,
    redis_url: str | None,
) -> None:
    api_client = await load_client(args.kubeconfig)
    sessions = SessionApi(api_client, args.namespace)
    metrics = GatewayMetrics()
    cache = SessionCache(sessions)
    observer = SessionObserver(sessions, metrics, guard, interval=args.observe_seconds, cache=cache)
    stdio = args.transport == "stdio"
    settings = GatewaySettings(
        namespace=args.namespace,
        wait_seconds=args.wait_seconds,
        default_user=(args.user or getpass.getuser()) if stdio else None,
        default_groups=tuple(args.groups),
    )
    gateway = Gateway(
        sessions, config, settings, guard=guard, metrics=metrics, observer=observer, cache=cache
    )
    verifier: Verifier | None = None
    if not stdio:
        verifiers: list[Verifier] = [tokens] if tokens is not None else []
        if args.token_review:
            verifiers.append(
                TokenReviewer(api_client, args.token_audience, any_audience=args.token_review_any_audience)
            )
            if args.token_review_any_audience:
                log.warning(
                    "TokenReview accepts ANY audience (--token-review-any-audience): every "
                    "ServiceAccount token of the cluster is a gateway identity"
                )
        verifier = VerifierChain(*verifiers)
    url = args.public_url or f"http://{args.host}:{args.port}/mcp"
    mcp = build_server(gateway, token_verifier=verifier, resource_url=url)
    log.info(
        "codex-gateway starting: transport=%s namespace=%s redis=%s",
        args.transport,
        args.namespace,
        redact_url(redis_url) if redis_url else "none (limits, budgets and cache off)",
    )
    if args.metrics_port:
        metrics.serve(args.metrics_port, addr=args.metrics_host or args.host)
    background = [
        asyncio.create_task(cache.run(), name="session-cache"),
        asyncio.create_task(observer.run(), name="session-observer"),
    ]
    try:
        if stdio:
            await mcp.run_stdio_async()
        else:
            security = TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=LOCAL_HOSTS + args.allowed_hosts,
                allowed_origins=LOCAL_ORIGINS + args.allowed_origins,
            )
            app = mcp.streamable_http_app(
                streamable_http_path="/mcp", host=args.host, transport_security=security
            )
            manager = mcp.session_manager
            metrics.mcp_connections.set_function(lambda: len(manager._server_instances))
            if guard.configured:
                # Every replica serves every handshake-era session (mcp_sessions.py).
                directory = SessionDirectory(guard, manager.session_idle_timeout or 30 * 60)
                share_sessions(manager, directory, on_adopt=metrics.mcp_adopted.inc)
            server = uvicorn.Server(
                uvicorn.Config(
                    app,
                    host=args.host,
                    port=args.port,
                    log_level=args.log_level,
                    lifespan="on",
                    log_config=None,
                )
            )
            await server.serve()
    finally:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await guard.close()
        await sessions.close()


def token_review_problem(args: argparse.Namespace) -> str | None:
    """Why the TokenReview flags cannot start a gateway, or None. Checked before
    anything runs: without an audience, TokenReview would accept every token
    the cluster issues (each pod has one), so that takes an explicit flag."""
    audiences = [a for a in args.token_audience if a.strip()]
    if len(audiences) != len(args.token_audience):
        return "--token-audience must not be empty"
    if not args.token_review:
        if audiences or args.token_review_any_audience:
            return "--token-audience and --token-review-any-audience need --token-review"
        return None
    if audiences and args.token_review_any_audience:
        return "give --token-audience or --token-review-any-audience, not both"
    if not audiences and not args.token_review_any_audience:
        return (
            "--token-review needs --token-audience AUD (repeatable): the audience clients mint their "
            "tokens for, e.g. `kubectl create token NAME --audience codex-gateway`. Without one, every "
            "ServiceAccount token of the cluster would be accepted; if that is really wanted, pass "
            "--token-review-any-audience (dangerous)"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config) if args.config else parse_config("")
    except ConfigError as err:
        print(f"codex-gateway: bad config:\n{err}", file=sys.stderr)
        return 2
    problem = token_review_problem(args)
    if problem:
        print(f"codex-gateway: {problem}", file=sys.stderr)
        return 2
    tokens = None
    if args.transport == "http":
        if not args.tokens_file and not args.token_review:
            print("codex-gateway: http needs --tokens-file and/or --token-review", file=sys.stderr)
            return 2
        if args.tokens_file:
            try:
                tokens = TokenStore.from_file(args.tokens_file)
            except (OSError, TokenFileError) as err:
                print(f"codex-gateway: bad tokens file: {err}", file=sys.stderr)
                return 2
            if not len(tokens) and not args.token_review:
                print("codex-gateway: the tokens file holds no tokens", file=sys.stderr)
                return 2
    redis_url = redis_url_from_env(config)
    try:
        guard = Guard(config, redis_url)
    except ValueError as err:
        print(f"codex-gateway: {err}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args, config, tokens, guard, redis_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
