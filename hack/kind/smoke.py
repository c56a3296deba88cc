"""`make e2e-kind`: the example session (examples/session-read-only.yaml)
through the gateway of an install, as an MCP client sees it, then a
full-access session approved by another user.

1. Waits for the gateway's /health, calls the `codex` tool with the
   example's prompt as the token's user, follows the session with
   `codex-session-info` until it is done; it must succeed.
2. With --approver-kubectl: calls `codex` with sandbox full-access, which
   must wait for approval. The requester's own approval (--requester-kubectl)
   must be refused; the approver runs the patch the tool printed (the
   identity webhook fills in who decided), and the session must succeed.

Usage: .venv/bin/python hack/kind/smoke.py --token TOKEN [--url http://127.0.0.1:8080]
         [--approver-kubectl "kubectl --as bob --as-group codex-approvers"]
         [--requester-kubectl "kubectl --as alice"] [--timeout 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx2
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "session-read-only.yaml"


class SmokeFailed(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(f"e2e-kind: FAILED: {message}")


def wait_healthy(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError) as err:
            last = err
        time.sleep(2)
    raise SmokeFailed(f"the gateway at {base}/health did not answer within {timeout:.0f}s: {last}")


def structured(result: Any) -> dict[str, Any]:
    if result.is_error or result.structured_content is None:
        raise SmokeFailed(f"tool error: {result.content}")
    return dict(result.structured_content)


async def follow(client: Client, out: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll codex-session-info until the session is done; its last answer."""
    session = out["session_id"]
    deadline = time.monotonic() + timeout
    while not out["done"]:
        if time.monotonic() > deadline:
            raise SmokeFailed(f"session {session} not done after {timeout:.0f}s: {out}")
        await asyncio.sleep(2)
        info = structured(await client.call_tool("codex-session-info", {"session_id": session}))
        if info["session"]["phase"] != out["phase"]:
            print(f"session {session}: {info['session']['phase']}", flush=True)
        out = info["session"]
    if out["phase"] != "Succeeded":
        raise SmokeFailed(f"session {session} ended {out['phase']}: {out}")
    return out


def kubectl(prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*shlex.split(prefix), *args], capture_output=True, text=True, timeout=60)


def approval_patch(approval: dict[str, Any]) -> tuple[str, str, str]:
    """(name, namespace, JSON patch) from the kubectl command the tool printed."""
    words = shlex.split(approval["command"])
    patch = words[words.index("-p") + 1]
    json.loads(patch)  # the printed command must carry valid JSON
    return approval["approval_request"], approval["namespace"], patch


async def approved_by_another_user(client: Client, args: argparse.Namespace) -> None:
    out = structured(
        await client.call_tool("codex", {"prompt": "smoke: a full-access turn", "sandbox": "full-access"})
    )
    session = out["session_id"]
    print(f"session {session}: {out['phase']} (risk {out.get('risk_level')})", flush=True)
    if out["status"] != "awaiting_approval" or not out.get("approval"):
        raise SmokeFailed(f"a full-access call did not wait for approval: {out}")
    name, namespace, patch = approval_patch(out["approval"])
    if args.requester_kubectl:
        own = kubectl(
            args.requester_kubectl, "patch", "cxar", name, "-n", namespace, "--type", "merge", "-p", patch
        )
        if own.returncode == 0:
            raise SmokeFailed(f"the requester approved their own request {name}")
        print(f"own approval refused: {own.stderr.strip()}", flush=True)
    done = kubectl(
        args.approver_kubectl, "patch", "cxar", name, "-n", namespace, "--type", "merge", "-p", patch
    )
    if done.returncode != 0:
        raise SmokeFailed(f"the approver's patch of {name} failed: {done.stderr.strip()}")
    got = kubectl(args.approver_kubectl, "get", "cxar", name, "-n", namespace, "-o", "json")
    spec = json.loads(got.stdout)["spec"] if got.returncode == 0 else {}
    print(f"approval {name}: {spec.get('decision')} by {spec.get('decidedBy')}", flush=True)
    final = await follow(client, out, args.timeout)
    print(f"approved answer: {final.get('response')}", flush=True)


async def smoke(args: argparse.Namespace) -> int:
    spec = yaml.safe_load(EXAMPLE.read_text())["spec"]
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {args.token}"}, timeout=httpx2.Timeout(30, read=120)
    )
    async with http, Client(streamable_http_client(f"{args.url}/mcp", http_client=http)) as client:
        out = structured(
            await client.call_tool(
                "codex",
                {
                    "prompt": spec["prompt"],
                    "sandbox": spec["sandbox"],
                    "reasoning_effort": spec["reasoningEffort"],
                },
            )
        )
        print(f"session {out['session_id']}: {out['phase']}", flush=True)
        final = await follow(client, out, args.timeout)
        print(f"answer: {final.get('response')}", flush=True)
        if args.approver_kubectl:
            await approved_by_another_user(client, args)
    print("e2e-kind: ok")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--url", default="http://127.0.0.1:8080", help="the gateway (kind-config.yaml's mapping)"
    )
    parser.add_argument("--token", required=True, help="a bearer token from the gateway's tokens Secret")
    parser.add_argument("--approver-kubectl", help="kubectl as an approver who is not the token's user")
    parser.add_argument(
        "--requester-kubectl", help="kubectl as the token's user (their own approval must fail)"
    )
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    wait_healthy(args.url, args.timeout)
    return asyncio.run(smoke(args))


if __name__ == "__main__":
    sys.exit(main())
