"""`codex-operator run`: start the operator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import TYPE_CHECKING

from codex_api.config import CodexMCPConfig, ConfigError, load_config
from codex_api.model_credential import key_from_env

from . import webhook
from .admission_server import AdmissionServer
from .health import HealthServer
from .kube import load_client
from .leader import LeaderElector, LeaseSettings, default_identity, lease_name

if TYPE_CHECKING:
    from .runtime import Runtime


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
    run.add_argument(
        "--health-port",
        type=int,
        default=8080,
        help="/healthz (liveness) and /readyz (leading) port (0: off)",
    )
    run.add_argument("--workers", type=int, default=16, help="concurrent reconciles")
    run.add_argument("--verbose", action="store_true")
    run.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="reconcile only while holding the Lease codex-operator.<sessions namespace> in the "
        "operator namespace, so that replicas > 1 have one active reconciler (off by default: the "
        "identity webhook is still served by the active replica only)",
    )
    run.add_argument(
        "--leader-identity", help="this replica's name in the Lease; default: $HOSTNAME (the pod)"
    )
    run.add_argument(
        "--lease-seconds", type=float, default=15.0, help="a silent leader is replaced after this long"
    )
    webhook.add_arguments(run)
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    # Imported here so that `codex-operator config validate` stays fast.
    import kopf

    from . import handlers  # noqa: F401  (registers the kopf handlers)
    from .runtime import Runtime

    try:
        config = load_config(args.config)
        webhook_options = webhook.options_from_args(args)
        # Runners through the model proxy get credentials this key signs.
        proxy = config.model_proxy
        credential_key = key_from_env(proxy.signing_key_env, dict(os.environ)) if proxy.url else None
    except (ConfigError, ValueError) as err:
        print(err, flush=True)
        return 1
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
        credential_key=credential_key,
    )
    if args.metrics_port:
        runtime.metrics.serve(args.metrics_port)  # before kopf: a busy port fails at once
    try:
        return asyncio.run(_serve(args, config, namespaces, runtime, webhook_options))
    except ValueError as err:
        print(err, flush=True)
        return 1


async def _serve(
    args: argparse.Namespace,
    config: CodexMCPConfig,
    namespaces: list[str],
    runtime: Runtime,
    webhook_options: webhook.WebhookOptions,
) -> int:
    """Stand by until this replica leads (when leader election is on), then run
    kopf until it stops or the Lease is lost; release the Lease on the way out."""
    import kopf

    elector = lease_client = None
    if args.leader_election:
        settings = LeaseSettings(
            namespace=config.kubernetes.operator_namespace,
            name=lease_name(namespaces),
            identity=args.leader_identity or default_identity(),
            lease_seconds=args.lease_seconds,
            renew_deadline_seconds=args.lease_seconds * 2 / 3,
            retry_seconds=max(0.2, args.lease_seconds / 7.5),
        )
        lease_client = await load_client(args.kubeconfig)
        elector = LeaderElector(lease_client, settings)

    def ready() -> bool:
        # A follower is ready: it serves the webhook and stands by. The leader
        # (or the only replica) is ready once its first sync is done.
        if elector is not None and not elector.leading:
            return True
        return runtime.running

    def role() -> str:
        return "follower" if elector is not None and not elector.leading else "leader"

    health = HealthServer(args.health_port, ready, role) if args.health_port else None
    if health:
        await health.start()
    admission = AdmissionServer(webhook_options) if webhook_options.enabled else None
    if admission:
        await admission.start()  # every replica stamps, leading or not
    lost = False
    try:
        if elector:
            await elector.acquire()
        stop = asyncio.Event()
        operator = asyncio.create_task(
            kopf.operator(
                namespaces=namespaces,
                standalone=True,
                stop_flag=stop,
                memo=kopf.Memo(runtime=runtime, webhook=webhook_options),
            )
        )
        watch = [operator]
        if elector:
            watch.append(asyncio.create_task(elector.hold()))
        done, _ = await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
        if operator not in done:
            lost = True  # stop reconciling before another replica may take over
            stop.set()
            await operator
    finally:
        if elector:
            if not lost:
                await elector.release()
            if lease_client is not None:
                await lease_client.close()
        if admission:
            await admission.stop()
        if health:
            await health.stop()
    return 1 if lost else 0
