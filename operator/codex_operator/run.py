"""`codex-operator run`: start the operator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from codex_api.config import ConfigError, load_config

from . import webhook


def add_run_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser("run", help="run the operator", description="Run the CodexSession operator.")
    run.add_argument("--config", required=True, help="TOML configuration file")
    run.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="namespace to watch (repeatable); default: kubernetes.sessions_namespace from the config",
    )
    run.add_argument("--kubeconfig", help="kubeconfig file; default: in-cluster, then $KUBECONFIG")
    run.add_argument("--metrics-port", type=int, default=9090, help="Prometheus /metrics port (0: off)")
    run.add_argument("--health-port", type=int, default=8080, help="liveness /healthz port (0: off)")
    run.add_argument("--workers", type=int, default=16, help="concurrent reconciles")
    run.add_argument("--verbose", action="store_true")
    webhook.add_arguments(run)
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    # Imported here so that `codex-operator config validate` stays fast.
    import kopf

    from . import handlers  # registers the kopf handlers
    from .runtime import Runtime

    try:
        config = load_config(args.config)
        webhook_options = webhook.options_from_args(args)
    except (ConfigError, ValueError) as err:
        print(err, flush=True)
        return 1
    if webhook_options.enabled:
        handlers.register_webhooks()
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf's own login reads it
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    namespaces = args.namespace or [config.kubernetes.sessions_namespace]
    runtime = Runtime(
        config,
        namespaces,
        kubeconfig=args.kubeconfig,
        workers=args.workers,
    )
    if args.metrics_port:
        runtime.metrics.serve(args.metrics_port)  # before kopf: a busy port fails at once
    liveness = f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None
    asyncio.run(
        kopf.operator(
            namespaces=namespaces,
            standalone=True,
            liveness_endpoint=liveness,
            memo=kopf.Memo(runtime=runtime, webhook=webhook_options),
        )
    )
    return 0
