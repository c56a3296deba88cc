"""Hostile requesters and the gateway's own records: `codex://logs/recent`,
`codex://stats/performance` and `/mcp/codex/stats` show a caller their own
lines and figures only (they name users, session ids and prompt excerpts);
an administrator (`[kubernetes] admin_groups`) sees everyone's.

The real `codex-gateway` process, the real operator and control plane, the
SDK's MCP client over streamable HTTP with each user's own bearer token.
mallory plays the attacker: an ordinary authenticated user reading
everything the gateway lets her read."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client

from codex_devenv.gateway_process import GatewayProcess, start_gateway

ALICE = "alice-token-" + secrets.token_hex(8)
MALLORY = "mallory-token-" + secrets.token_hex(8)
DAVE = "dave-token-" + secrets.token_hex(8)
TOKENS: dict[str, Any] = {
    ALICE: "alice",
    MALLORY: "mallory",
    # In the default config's admin_groups (codex-admins).
    DAVE: {"user": "dave", "groups": ["codex-admins"]},
}


@pytest.fixture
def gateway(
    control_plane: Any, namespace: str, run_operator: Any, tmp_path: Path
) -> Iterator[GatewayProcess]:
    run_operator()
    running = start_gateway(control_plane, namespace, tmp_path, TOKENS, wait_seconds=2)
    yield running
    running.stop()


async def _read(client: Client, uri: str) -> str:
    contents = (await client.read_resource(uri)).contents
    assert len(contents) == 1
    return str(contents[0].text)  # type: ignore[union-attr]


async def _codex(client: Client, prompt: str) -> str:
    out = await client.call_tool("codex", {"prompt": prompt})
    assert not out.is_error and out.structured_content is not None, out.content
    return str(out.structured_content["session_id"])


def _http_stats(gateway: GatewayProcess, token: str) -> dict[str, Any]:
    resp = httpx2.get(
        f"{gateway.base}/mcp/codex/stats", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def test_logs_and_stats_show_callers_their_own_records(gateway: GatewayProcess) -> None:
    alice_prompt = "alice-private-roadmap-" + secrets.token_hex(6)
    mallory_prompt = "mallory-innocent-question-" + secrets.token_hex(6)

    async with gateway.client(ALICE) as alice:
        alice_session = await _codex(alice, f"summarise {alice_prompt}")
        info = await alice.call_tool("codex-session-info", {"session_id": alice_session})
        assert not info.is_error

    async with gateway.client(MALLORY) as mallory:
        mallory_session = await _codex(mallory, f"explain {mallory_prompt}")
        # The attack: read every record the gateway offers an authenticated user.
        logs = await _read(mallory, "codex://logs/recent")
        stats_text = await _read(mallory, "codex://stats/performance")
        http_stats = _http_stats(gateway, MALLORY)
    stolen = logs + stats_text + json.dumps(http_stats["tools"])
    for secret in (alice_session, alice_prompt, "alice"):
        assert secret not in stolen, f"mallory read {secret!r}"
    # ...and what she reads is really the resource, with her own records in it.
    assert mallory_session in logs and mallory_prompt in logs
    lines = [json.loads(line) for line in logs.splitlines()]
    assert lines and all("alice" not in json.dumps(line) for line in lines)
    stats = json.loads(stats_text)
    assert stats["scope"] == "mine" and stats["user"] == "mallory" and "users" not in stats
    assert stats["tools"]["codex"]["calls"] == 1 and set(stats["tools"]) == {"codex"}
    assert http_stats["tools"]["scope"] == "mine" and http_stats["tools"]["total_calls"] == 1

    # alice sees hers and none of mallory's
    async with gateway.client(ALICE) as alice:
        logs = await _read(alice, "codex://logs/recent")
        stats = json.loads(await _read(alice, "codex://stats/performance"))
    assert alice_session in logs and alice_prompt in logs
    assert mallory_session not in logs and mallory_prompt not in logs and "mallory" not in logs
    assert stats["user"] == "alice" and stats["tools"]["codex"]["calls"] == 1
    assert stats["tools"]["codex-session-info"]["calls"] == 1

    # an administrator sees everyone's
    async with gateway.client(DAVE) as dave:
        logs = await _read(dave, "codex://logs/recent")
        stats = json.loads(await _read(dave, "codex://stats/performance"))
    for text in (alice_session, alice_prompt, mallory_session, mallory_prompt):
        assert text in logs, text
    assert "codex-gateway starting" in logs  # the gateway's own lines, nobody's in particular
    assert stats["scope"] == "all" and stats["tools"]["codex"]["calls"] == 2
    assert {"alice", "mallory"} <= set(stats["users"])
    assert stats["users"]["mallory"] == {"calls": 1, "errors": 0}
    assert _http_stats(gateway, DAVE)["tools"]["scope"] == "all"
    # no bearer token was ever logged
    for token in (ALICE, MALLORY, DAVE):
        assert token not in logs and token not in gateway.log()
