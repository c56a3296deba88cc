"""The ``codex-model-proxy`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from codex_api.config import CodexMCPConfig, ConfigError, load_config, parse_config
from codex_api.model_credential import key_from_env
from codex_gateway.guard import Guard, redis_url_from_env
from codex_gateway.kube import load_client
from codex_gateway.logs import setup_logging

from .meter import Meter
from .server import ModelProxy, upstreams_from
from .sessions import SessionChecker


def _port(value: str) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {value}")
    return port


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="codex-model-proxy", description=__doc__)
    p.add_argument("--config", help="the TOML configuration file (default: built-in defaults)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8090, help="port to listen on (default 8090)")
    p.add_argument(
        "--metrics-port",
        type=_port,
        help="serve /metrics on this port instead of --port (which runner pods reach)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


async def serve(args: argparse.Namespace, config: CodexMCPConfig, key: bytes, guard: Guard) -> None:
    api_client = await load_client(args.kubeconfig)
    proxy = ModelProxy(
        config,
        key,
        SessionChecker(api_client, config),
        Meter(guard, config),
        upstreams_from(config, dict(os.environ)),
    )
    runner = web.AppRunner(proxy.app(with_metrics=args.metrics_port is None), access_log=None)
    await runner.setup()
    # Every runner of a burst of turns connects at once.
    await web.TCPSite(runner, args.host, args.port, backlog=1024).start()
    runners = [runner]
    if args.metrics_port is not None:
        metrics = web.AppRunner(proxy.metrics_app(), access_log=None)
        await metrics.setup()
        await web.TCPSite(metrics, args.host, args.metrics_port).start()
        runners.append(metrics)
    print(f"codex-model-proxy listening on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for each in reversed(runners):
            await each.cleanup()
        await api_client.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config) if args.config else parse_config("")
    except ConfigError as err:
        print(f"codex-model-proxy: bad config:\n{err}", file=sys.stderr)
        return 2
    try:
        key = key_from_env(config.model_proxy.signing_key_env, dict(os.environ))
        guard = Guard(config, redis_url_from_env(config))
    except ValueError as err:
        print(f"codex-model-proxy: {err}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args, config, key, guard))
    return 0
