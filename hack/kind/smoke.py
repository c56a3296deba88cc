"""`make e2e-kind`: the example session (examples/session-read-only.yaml)
through the gateway of the kind install, as an MCP client sees it.

Waits for the gateway's /health on the kind port mapping, calls the `codex`
tool with the example's prompt as the token's user, follows the session with
`codex-session-info` until it is done, and fails unless it Succeeded.

Usage: .venv/bin/python hack/kind/smoke.py --token TOKEN [--url http://127.0.0.1:8080] [--timeout 300]
"""

from __future__ import annotations

import argparse
import asyncio
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
    raise SystemExit(f"the gateway at {base}/health did not answer within {timeout:.0f}s: {last}")


def structured(result: Any) -> dict[str, Any]:
    if result.is_error or result.structured_content is None:
        raise SystemExit(f"tool error: {result.content}")
    return dict(result.structured_content)


async def smoke(base: str, token: str, timeout: float) -> int:
    spec = yaml.safe_load(EXAMPLE.read_text())["spec"]
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=120)
    )
    async with http, Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
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
        session = out["session_id"]
        print(f"session {session}: {out['phase']}", flush=True)
        deadline = time.monotonic() + timeout
        while not out["done"]:
            if time.monotonic() > deadline:
                print(f"session {session} not done after {timeout:.0f}s: {out}", file=sys.stderr)
                return 1
            await asyncio.sleep(3)
            out = structured(await client.call_tool("codex-session-info", {"session_id": session}))
            print(f"session {session}: {out['phase']}", flush=True)
    if out["phase"] != "Succeeded":
        print(f"session {session} ended {out['phase']}: {out}", file=sys.stderr)
        return 1
    print(f"answer: {out.get('response')}")
    print("e2e-kind: ok")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", default="http://127.0.0.1:8080", help="the gateway (kind-config.yaml's mapping)"
    )
    parser.add_argument("--token", required=True, help="a bearer token from the gateway's tokens Secret")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    wait_healthy(args.url, args.timeout)
    return asyncio.run(smoke(args.url, args.token, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
