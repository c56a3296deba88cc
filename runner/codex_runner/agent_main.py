"""`codex-runner agent ...`: a live runner pod's entrypoint (warm runners).

Prepares the pod as the one-shot runner does (the network fence, Codex's
home and config, the inner-sandbox probe), then serves the agent
(codex_runner.agent) until no turn has come for `--idle-seconds`: the
process then ends and so does the pod, and the conversation's next reply
starts cold from its workspace.

From the pod's environment: `CODEX_AGENT_PUBLIC_KEY` (PEM, the operator's
public key) and `CODEX_POD_UID` (the downward API), which every signed
request must name.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from codex_api.result import (
    EXIT_CODEX_MISSING,
    EXIT_CONFIG_ERROR,
    EXIT_NETWORK_UNFENCED,
    TERMINATION_MESSAGE_LIMIT,
    TERMINATION_MESSAGE_PATH,
)
from codex_api.turn_request import load_public_key

from .agent import Agent
from .app_server import AppServer
from .contract import (
    ENV_POD_UID,
    ENV_PUBLIC_KEY,
    AgentOptions,
    RunnerArgsError,
    TurnSettings,
    parse_agent_args,
)
from .hardening import dumpable, make_non_dumpable, starts_non_dumpable
from .invocation import build_config, codex_sandbox
from .network_fence import wait_until_fenced
from .runner import codex_binary, log_event, prepare_home, write_codex_config

IDLE_CHECK_SECONDS = 1.0


def main(argv: Sequence[str]) -> int:
    try:
        settings, options = parse_agent_args(argv)
    except RunnerArgsError as err:
        print(f"codex-runner: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        public_key = load_public_key(os.environ[ENV_PUBLIC_KEY].encode())
        pod_uid = os.environ[ENV_POD_UID]
    except (KeyError, ValueError) as err:
        print(f"codex-runner: {ENV_PUBLIC_KEY} and {ENV_POD_UID} must be set ({err!r})", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    codex_bin = codex_binary()
    if codex_bin is None or not os.access(codex_bin, os.X_OK):
        print(f"codex-runner: codex binary not found ({codex_bin or 'not on PATH'})", file=sys.stderr)
        return EXIT_CODEX_MISSING
    make_non_dumpable()
    guarded = starts_non_dumpable(codex_bin)
    log_event(sys.stdout, "process hardening", agent_dumpable=dumpable(), app_server_non_dumpable=guarded)
    if not guarded:
        # A custom image with a readable codex: the model's commands can write into
        # the app-server's stdin. Served anyway (the pod still bounds them), said loudly.
        log_event(sys.stdout, "codex binary is readable: its commands can reach the app-server's pipe")
    if settings.network_fence_seconds is not None:
        fence = wait_until_fenced(settings.network_fence_seconds)
        log_event(
            sys.stdout,
            "network fence",
            fenced=fence.fenced,
            target=fence.target,
            waited_seconds=fence.waited_seconds,
        )
        if not fence.fenced:
            print(f"codex-runner: {fence.detail}", file=sys.stderr)
            return EXIT_NETWORK_UNFENCED
    try:
        env, inner = _prepare(settings, options, codex_bin)
    except OSError as err:
        print(f"codex-runner: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    agent = Agent(
        public_key=public_key,
        pod_uid=pod_uid,
        workspace=Path(settings.workspace),
        start_app_server=lambda on_request: AppServer.start(
            codex_bin, env=env, cwd=settings.workspace, stderr=None, on_request=on_request
        ),
        credential_file=Path(options.credential_file) if options.credential_file else None,
        sandbox=settings.sandbox,
        inner_sandbox=inner,
    )
    asyncio.run(_serve(agent, options))
    return 0


def _prepare(settings: TurnSettings, options: AgentOptions, codex_bin: str) -> tuple[dict[str, str], bool]:
    """Codex's home and config, once for every turn the pod will serve."""
    env, inner = prepare_home(settings, codex_bin)
    env.pop(ENV_PUBLIC_KEY, None)
    config = build_config(
        settings,
        sandbox_mode=codex_sandbox(settings, inner_sandbox=inner),
        credential_file=options.credential_file,
    )
    write_codex_config(Path(settings.codex_home), config)
    return env, inner


async def _serve(agent: Agent, options: AgentOptions) -> None:
    runner = web.AppRunner(agent.app(), access_log=None)
    await runner.setup()
    # Every address of the pod: the operator calls it by the pod's IP, and the
    # NetworkPolicy lets only the operator through.
    await web.TCPSite(runner, host=None, port=options.port).start()
    log_event(sys.stdout, "agent listening", port=options.port, idle_seconds=options.idle_seconds)
    warming = asyncio.create_task(agent.warm_up())
    try:
        while agent.idle_for() < options.idle_seconds:
            await asyncio.sleep(IDLE_CHECK_SECONDS)
        log_event(sys.stdout, "idle: the pod ends", idle_seconds=options.idle_seconds)
    finally:
        warming.cancel()
        await runner.cleanup()
        # The last turn's report outlives the process: an operator that was down
        # when the agent answered reads it from the pod's status, and does not
        # run the turn again.
        last = agent.last_report()
        if last is not None:
            path = os.environ.get("CODEX_TERMINATION_LOG", TERMINATION_MESSAGE_PATH)
            try:
                Path(path).write_text(last.bounded(TERMINATION_MESSAGE_LIMIT))
            except OSError as err:
                log_event(sys.stdout, "could not keep the last report", error=str(err))
