"""`make dev` (the README's first command) reaches ready, serves a working
control plane and MCP gateway, and stops every process it started on Ctrl-C.

Headless: start it, wait for `ready`, check the example sessions (kubectl and
MCP), use kubectl and the MCP Inspector CLI with what it printed (a turn that
needs an approval, approved by another user with kubectl), then SIGINT.

A second run takes the other branch, a model endpoint of one's own
(CODEX_MODEL_API_KEY, CODEX_MODEL_BASE_URL, CODEX_MODEL): the test's fake model
stands in for it, and the examples must run through the shipped default
provider id with the given key."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from codex_api.config import DEFAULT_PROVIDER_ID
from codex_devenv import fake_model as fm
from codex_devenv.mcp_clients import inspector_cli
from codex_devenv.node import node_env
from codex_devenv.process import free_port

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "codex-sessions"
# What selects `make dev`'s model; never inherited from the shell running the tests.
MODEL_ENV = ("CODEX_MODEL_API_KEY", "CODEX_MODEL_BASE_URL", "CODEX_MODEL")


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in MODEL_ENV}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split()[2] == "Z"


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        out[key] = shlex.split(value)[0] if value else ""
    return out


def _check_gateway(text: str, work: Path, kubectl: str) -> None:
    """The printed gateway, called as a user would: the MCP Inspector CLI with the printed token."""
    gateway = _env_file(work / "gateway.env")
    url, token = gateway["CODEX_GATEWAY_URL"], gateway["CODEX_GATEWAY_TOKEN"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/mcp", url), url
    assert f"MCP URL       {url}" in text and f"token         {token}" in text, text
    assert f'claude mcp add --transport http codex {url} --header "Authorization: Bearer {token}"' in text
    assert f"codex mcp add codex --url {url} --bearer-token-env-var CODEX_GATEWAY_TOKEN" in text
    mcp_json = json.loads((work / "mcp.json").read_text())
    assert mcp_json["mcpServers"]["codex"] == {"url": url, "headers": {"Authorization": f"Bearer {token}"}}
    for secret in ("gateway.env", "mcp.json", "gateway-tokens.json"):
        assert (work / secret).stat().st_mode & 0o777 == 0o600, secret

    def call(*args: str) -> Any:
        return inspector_cli(url, token, *args).result

    tools = {t["name"] for t in call("--method", "tools/list")["tools"]}
    assert {"codex", "codex-reply", "codex-session-info"} <= tools, tools

    # an isolated turn needs an approval: it waits, and shows up as the dev user's active session
    started = call(
        "--method",
        "tools/call",
        "--tool-name",
        "codex",
        "--tool-args-json",
        json.dumps({"prompt": "say hi", "sandbox": "isolated"}),
    )
    assert started["isError"] is False, started
    pending = started["structuredContent"]
    assert pending["status"] == "awaiting_approval" and pending["requested_by"] == "developer", pending
    session_id, approval = pending["session_id"], pending["approval"]["approval_request"]

    info = call(
        "--method", "tools/call", "--tool-name", "codex-session-info", "--tool-arg", "list_active=true"
    )
    assert info["isError"] is False, info
    assert [s["session_id"] for s in info["structuredContent"]["sessions"]] == [session_id], info
    [contents] = call("--method", "resources/read", "--uri", "codex://sessions/active")["contents"]
    active = json.loads(contents["text"])
    assert active["user"] == "developer", active
    assert [s["session_id"] for s in active["sessions"]] == [session_id], active

    # alice (an approver, not the requester) approves with the documented command: the
    # operator's webhook stamps decidedBy and the admission policy accepts it
    alice = work / "control-plane" / "kubeconfigs" / "alice.yaml"
    approve = [kubectl, "--kubeconfig", str(alice), "-n", NAMESPACE, "patch", "cxar", approval]
    approve += ["--type", "merge", "-p", '{"spec":{"decision":"Approved"}}']
    approved = subprocess.run(approve, capture_output=True, text=True, timeout=60)
    assert approved.returncode == 0, approved.stderr
    env = {**os.environ, "KUBECONFIG": str(work / "kubeconfig")}

    def kubectl_out(*args: str) -> str:
        run = subprocess.run([kubectl, *args], env=env, capture_output=True, text=True, timeout=60)
        return run.stdout + run.stderr

    deadline = time.monotonic() + 240
    phase = ""
    while time.monotonic() < deadline:
        phase = kubectl_out("get", "cxs", session_id, "-n", NAMESPACE, "-o", "jsonpath={.status.phase}")
        if phase in ("Succeeded", "Failed", "TimedOut", "Denied", "Cancelled"):
            break
        time.sleep(1)
    if phase != "Succeeded":
        operator_log = (work / f"operator-{NAMESPACE}.log").read_text(errors="replace")
        pytest.fail(
            f"the approved session {session_id} is {phase!r}\n"
            + kubectl_out("get", "cxs,cxar,pods", "-n", NAMESPACE, "-o", "wide")
            + kubectl_out("get", "cxs", session_id, "-n", NAMESPACE, "-o", "yaml")
            + kubectl_out(
                "describe", "pods", "-n", NAMESPACE, "-l", f"codex.techsapo.io/session={session_id}"
            )
            + kubectl_out("logs", "-n", NAMESPACE, f"{session_id}-runner-1", "--tail=40")
            + "\n--- operator log ---\n"
            + "\n".join(operator_log.splitlines()[-60:])
        )
    done = call(
        "--method",
        "tools/call",
        "--tool-name",
        "codex-session-info",
        "--tool-arg",
        f"session_id={session_id}",
    )["structuredContent"]["session"]
    assert done["phase"] == "Succeeded" and done["response"] == "Hello from the fake model.", done
    decided = kubectl_out("get", "cxar", approval, "-n", NAMESPACE, "-o", "jsonpath={.spec.decidedBy}")
    assert decided == "alice", decided


@contextlib.contextmanager
def _make_dev(work: Path, env: Mapping[str, str]) -> Iterator[tuple[str, dict[str, int]]]:
    """`make dev` until `ready`: (what it printed, its pids); then SIGINT, and every process gone."""
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "dev", f"DEVENV_ARGS=--work-dir {work}"],
        cwd=REPO,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    output: list[str] = []
    pids: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.strip() == "ready":
                break
        text = "".join(output)
        assert output and output[-1].strip() == "ready", text
        pids = {
            name: int(pid)
            for line in text.splitlines()
            if line.lstrip().startswith(("pids", "node pids"))
            for name, pid in re.findall(r"(\S+)=(\d+)", line)
        }
        yield text, pids
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("make dev did not stop on SIGINT")
    assert "stopped" in rest
    for name, pid in pids.items():
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(pid), f"{name} (pid {pid}) still running after make dev stopped"


def test_make_dev_headless(tmp_path: Path) -> None:
    work = tmp_path / "devenv"
    with _make_dev(work, _base_env()) as (text, pids):
        expected = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "redis-server"}
        expected |= {"containerd", "kubelet", "codex-operator", "codex-gateway", "codex-model-proxy"}
        assert expected <= set(pids), pids
        # the example sessions ran through the operator, a runner pod and the real Codex CLI:
        # one applied with kubectl, one a `codex` tool call through the gateway
        assert re.search(r"example .*hello-codex.*: Succeeded -- 'Hello from the fake model.'", text), text
        assert re.search(
            r"mcp example +codex tool as developer: Succeeded -- 'Hello from the fake model.'\n"
            r" +session cx-\S+, model fake-model, usage in=\d+ .* cost ",
            text,
        ), text

        kubectl = re.search(r"alias kubectl=(\S+)", text)
        assert kubectl is not None
        env = {**os.environ, "KUBECONFIG": str(work / "kubeconfig")}
        applied = subprocess.run(
            [kubectl.group(1), "apply", "-n", "default", "-f", "examples/session-read-only.yaml"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert applied.returncode == 0, applied.stderr
        listed = subprocess.run(
            [kubectl.group(1), "get", "cxs"], env=env, capture_output=True, text=True, timeout=60
        )
        assert "hello-codex" in listed.stdout and "read-only" in listed.stdout

        _check_gateway(text, work, kubectl.group(1))


def test_make_dev_with_a_model_endpoint_of_ones_own(tmp_path: Path) -> None:
    """`CODEX_MODEL_API_KEY=... make dev`: the branch for a real model API, which ran
    with Codex's reserved provider id `openai` and so failed every session."""
    work = tmp_path / "devenv"
    key = "sk-dev-endpoint-" + secrets.token_hex(16)
    answer = "Hello from the endpoint in CODEX_MODEL_BASE_URL."
    # On the pod bridge's own address, as make dev's fake model: runner pods reach
    # it, nothing leaves this machine.
    bridge_ip = node_env()["NODE_BRIDGE_ADDR"].split("/")[0]
    with fm.FakeModelServer(port=free_port(), host=bridge_ip) as model:
        model.set_script(then=fm.say(answer, usage=fm.Usage(input_tokens=150, output_tokens=11)))
        env = {
            **_base_env(),
            "CODEX_MODEL_API_KEY": key,
            "CODEX_MODEL_BASE_URL": model.url,
            "CODEX_MODEL": "gpt-5-codex",
        }
        with _make_dev(work, env) as (text, _pids):
            assert (
                f"model           {model.url} (real model gpt-5-codex, key from CODEX_MODEL_API_KEY)" in text
            )
            assert re.search(rf"example .*hello-codex.*: Succeeded -- {re.escape(repr(answer))}", text), text
            assert re.search(
                rf"mcp example +codex tool as developer: Succeeded -- {re.escape(repr(answer))}\n"
                r" +session cx-\S+, model gpt-5-codex, usage in=150 ",
                text,
            ), text
            kubectl = re.search(r"alias kubectl=(\S+)", text)
            assert kubectl is not None
            pods = subprocess.run(
                [kubectl.group(1), "get", "pods", "-n", NAMESPACE, "-o", "json"],
                env={**os.environ, "KUBECONFIG": str(work / "kubeconfig")},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert pods.returncode == 0, pods.stderr
            runners = [
                p for p in json.loads(pods.stdout)["items"] if p["metadata"]["name"].endswith("-runner-1")
            ]
            assert len(runners) == 2, [p["metadata"]["name"] for p in runners]  # the two examples
            for pod in runners:
                args = pod["spec"]["containers"][0]["args"]
                # the shipped default provider id, which Codex accepts
                assert args[args.index("--provider-id") + 1] == DEFAULT_PROVIDER_ID, args
                # through the model proxy, with the session's credential instead of the key
                base_url = args[args.index("--base-url") + 1]
                assert base_url.endswith(f"/v1/{DEFAULT_PROVIDER_ID}") and base_url != model.url, args
                assert base_url.startswith(f"http://{bridge_ip}:"), args
                assert key not in json.dumps(pod), "the key is in a runner pod's spec"
                assert "secretKeyRef" not in json.dumps(pod["spec"]), pod["spec"]
        assert re.search(r"model proxy +http://\S+ \(holds the key", text), text
        # Both examples reached this server, with the key make dev gave the model proxy.
        requests = model.responses_requests
        assert len(requests) >= 2, requests
        assert {r.authorization for r in requests} == {f"Bearer {key}"}
        assert model.errors == []
