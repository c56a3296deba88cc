"""``codex-gateway``: serve the MCP gateway over streamable HTTP on /mcp."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

import uvicorn

from codex_api.config import CodexMCPConfig, ConfigError, load_config, parse_config

from .auth import TokenFileError, TokenStore
from .kube import SessionApi, load_client
from .server import DEFAULT_WAIT_SECONDS, Gateway, GatewaySettings, build_server

log = logging.getLogger("codex_gateway")


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="codex-gateway", description=__doc__)
    p.add_argument("--config", help="the TOML configuration file (default: built-in defaults)")
    p.add_argument("--tokens-file", required=True, help="YAML/JSON mapping of bearer token -> user")
    p.add_argument("--namespace", required=True, help="namespace of the CodexSessions")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="port to listen on (default 8080)")
    p.add_argument(
        "--public-url",
        help="the URL clients use for /mcp (OAuth resource metadata; default http://HOST:PORT/mcp)",
    )
    p.add_argument(
        "--wait-seconds",
        type=_positive,
        default=DEFAULT_WAIT_SECONDS,
        help=f"how long a tool call waits for the turn before answering 'running' (default {DEFAULT_WAIT_SECONDS:g})",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


async def serve(args: argparse.Namespace, config: CodexMCPConfig, tokens: TokenStore) -> None:
    api_client = await load_client(args.kubeconfig)
    sessions = SessionApi(api_client, args.namespace)
    gateway = Gateway(
        sessions, config, GatewaySettings(namespace=args.namespace, wait_seconds=args.wait_seconds)
    )
    url = args.public_url or f"http://{args.host}:{args.port}/mcp"
    mcp = build_server(gateway, token_store=tokens, resource_url=url)
    app = mcp.streamable_http_app(streamable_http_path="/mcp", host=args.host)
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, lifespan="on")
    )
    try:
        await server.serve()
    finally:
        await sessions.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = load_config(args.config) if args.config else parse_config("")
    except ConfigError as err:
        print(f"codex-gateway: bad config:\n{err}", file=sys.stderr)
        return 2
    try:
        tokens = TokenStore.from_file(args.tokens_file)
    except (OSError, TokenFileError) as err:
        print(f"codex-gateway: bad tokens file: {err}", file=sys.stderr)
        return 2
    if not len(tokens):
        print("codex-gateway: the tokens file holds no tokens", file=sys.stderr)
        return 2
    asyncio.run(serve(args, config, tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
