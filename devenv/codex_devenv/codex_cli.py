"""The real OpenAI Codex CLI for tests and the offline demo.

`codex_binary()` installs the pinned `@openai/codex` (hack/install-codex.sh,
CODEX_VERSION in hack/versions.env) into the cache outside the checkout and
returns the native binary; `CODEX_BIN` overrides it.

`write_codex_home()` writes a CODEX_HOME whose config talks to a fake model
(codex_devenv.fake_model) through a custom provider, and `run_exec()` runs
one `codex exec --json` turn (or `codex exec resume`) and parses the JSONL
events.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codex_runner.invocation import model_catalog

from .assets import REPO_ROOT, pinned_versions

INSTALL_SCRIPT = REPO_ROOT / "hack" / "install-codex.sh"
FAKE_PROVIDER_ID = "fake"
FAKE_MODEL = "fake-model"
FAKE_API_KEY_ENV = "FAKE_MODEL_API_KEY"

_installed: dict[str, Path] = {}


def codex_version() -> str:
    return pinned_versions()["CODEX_VERSION"]


def codex_binary() -> Path:
    """The native Codex binary: `CODEX_BIN` if set, else the pinned release (installed on first use)."""
    override = os.environ.get("CODEX_BIN")
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"CODEX_BIN={override} is not a file")
        return path
    version = codex_version()
    if version not in _installed:
        out = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)], check=True, stdout=subprocess.PIPE, stderr=sys.stderr, text=True
        )
        lines = out.stdout.strip().splitlines()
        if not lines:
            raise RuntimeError(f"{INSTALL_SCRIPT} printed no binary path")
        _installed[version] = Path(lines[-1])
    return _installed[version]


# --------------------------------------------------------------------------- CODEX_HOME for a fake model


def fake_model_catalog(model: str = FAKE_MODEL) -> dict[str, Any]:
    """The runner's catalog entry for the fake model's slug, with short instructions (smaller requests)."""
    return model_catalog(model, base_instructions="You are Codex, answering through a scripted fake model.")


def fake_provider_config(
    base_url: str,
    *,
    model: str = FAKE_MODEL,
    env_key: str = FAKE_API_KEY_ENV,
    catalog_path: Path | None = None,
    extra: str = "",
) -> str:
    """config.toml for a custom provider at `base_url` (…/v1) with fast failures and no network side trips."""
    catalog = f"model_catalog_json = {json.dumps(str(catalog_path))}\n" if catalog_path else ""
    return (
        f"model = {json.dumps(model)}\n"
        f"model_provider = {json.dumps(FAKE_PROVIDER_ID)}\n"
        "check_for_update_on_startup = false\n"
        f"{catalog}"
        f"{extra}"
        "\n[analytics]\nenabled = false\n"
        "\n[features]\nplugins = false\n"
        f"\n[model_providers.{FAKE_PROVIDER_ID}]\n"
        'name = "Fake model"\n'
        f"base_url = {json.dumps(base_url)}\n"
        'wire_api = "responses"\n'
        f"env_key = {json.dumps(env_key)}\n"
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
    )


def write_codex_home(
    home: Path,
    base_url: str,
    *,
    model: str = FAKE_MODEL,
    env_key: str = FAKE_API_KEY_ENV,
    extra: str = "",
) -> Path:
    """Create `home` with config.toml and model-catalog.json for the fake model; return it.

    `extra` is TOML inserted at the top level (before the tables).
    """
    home.mkdir(parents=True, exist_ok=True)
    catalog = home / "model-catalog.json"
    catalog.write_text(json.dumps(fake_model_catalog(model), indent=2) + "\n")
    config = fake_provider_config(base_url, model=model, env_key=env_key, catalog_path=catalog, extra=extra)
    (home / "config.toml").write_text(config)
    return home


# --------------------------------------------------------------------------- running `codex exec`


@dataclass
class ExecResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration: float
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def thread_id(self) -> str | None:
        for e in self.events:
            if e.get("type") == "thread.started":
                return str(e["thread_id"])
        return None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    def items(self, item_type: str | None = None) -> list[dict[str, Any]]:
        """Completed items (agent_message, command_execution, file_change, error, ...)."""
        done = [e["item"] for e in self.of_type("item.completed")]
        return [i for i in done if item_type is None or i.get("type") == item_type]

    @property
    def agent_messages(self) -> list[str]:
        return [str(i.get("text", "")) for i in self.items("agent_message")]

    @property
    def usage(self) -> dict[str, Any] | None:
        """`turn.completed.usage` (cumulative for the thread, not per turn)."""
        done = self.of_type("turn.completed")
        return done[-1].get("usage") if done else None

    @property
    def failure(self) -> str | None:
        failed = self.of_type("turn.failed")
        return str(failed[-1].get("error", {}).get("message")) if failed else None

    def describe(self) -> str:
        return f"exit {self.returncode} after {self.duration:.2f}s\nstdout:\n{self.stdout}\nstderr:\n{self.stderr[-2000:]}"


def parse_events(stdout: str) -> list[dict[str, Any]]:
    events = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def exec_env(
    codex_home: Path, *, api_key: str = "sk-fake-test-key", env_key: str = FAKE_API_KEY_ENV
) -> dict[str, str]:
    """A small, explicit environment for codex: nothing of the caller's leaks in.

    TMPDIR points beside CODEX_HOME (never above it): with CODEX_HOME under
    $TMPDIR Codex warns on every run and refuses to create its helper links.
    """
    tmp = codex_home.parent / f"{codex_home.name}-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(codex_home.parent),
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmp),
        "CODEX_HOME": str(codex_home),
        env_key: api_key,
    }


def run_exec(
    prompt: str,
    *,
    codex_home: Path,
    cwd: Path,
    sandbox: str | None = "read-only",
    config: Sequence[str] = (),
    resume: str | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    binary: Path | None = None,
    timeout: float = 120,
) -> ExecResult:
    """One `codex exec --json` turn (or `codex exec resume --json THREAD_ID`), stdin closed.

    `config` entries are `-c key=value` overrides (TOML values). `env` is the
    whole environment (default: exec_env(codex_home)). Resume does not
    restore the sandbox mode, so it is passed as `-c sandbox_mode=...`.
    """
    argv = [str(binary or codex_binary()), "exec"]
    if resume:
        argv.append("resume")
    argv += ["--json", "--skip-git-repo-check"]
    if sandbox is not None:
        argv += ["-c", f'sandbox_mode="{sandbox}"'] if resume else ["-s", sandbox]
    for c in config:
        argv += ["-c", c]
    if not resume:
        argv += ["-C", str(cwd)]
    argv += list(extra_args)
    if resume:
        argv.append(resume)
    argv.append(prompt)
    start = time.monotonic()
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=dict(env) if env is not None else exec_env(codex_home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return ExecResult(
        argv=argv,
        returncode=proc.returncode,
        stdout=proc.stdout,
        stderr=proc.stderr,
        duration=time.monotonic() - start,
        events=parse_events(proc.stdout),
    )
