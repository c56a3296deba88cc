"""Turn settings -> the Codex invocation and its config.toml. Pure.

First turn: `codex exec --json`; a reply: `codex exec resume --json THREAD`.
Resume does not restore the sandbox mode, so it is passed on every turn.
The model provider is a custom one (base URL, env var holding the key,
responses wire API): the built-in provider would try WebSockets and the
internet. Commands the model runs never see secrets: the shell environment
policy keeps only core variables and drops *KEY*, *TOKEN*, *SECRET* and the
provider key by name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from codex_api.sandbox import PROFILES

from .contract import TurnSettings

# Resource sandbox levels -> Codex's own sandbox modes.

CODEX_SANDBOX = {level: p.codex_mode for level, p in PROFILES.items()}
# Slugs Codex knows; others get a catalog entry so Codex does not warn on every run.
KNOWN_MODELS = frozenset(
    {"gpt-5", "gpt-5-codex", "gpt-5.1", "gpt-5.1-codex", "o3", "o4-mini", "codex-mini-latest"}
)
SECRET_PATTERNS = ("*KEY*", "*TOKEN*", "*SECRET*")
INSTRUCTIONS_FILE = "base-instructions.md"
CATALOG_FILE = "model-catalog.json"
GENERIC_INSTRUCTIONS = "You are Codex, a coding agent. Work in the current directory; be concise."


def model_catalog(model: str, *, base_instructions: str | None = None) -> dict[str, object]:
    """A `model_catalog_json` entry for a slug Codex does not know.

    Without it Codex reports an `error` item on every run and, with fallback
    metadata, offers no apply_patch tool. `shell_type = "unified_exec"`
    offers exec_command; `apply_patch_tool_type = "freeform"` makes
    apply_patch a custom tool (Codex 0.171 catalog schema).
    """
    return {
        "models": [
            {
                "slug": model,
                "display_name": model,
                "description": "Model served by the configured provider",
                "default_reasoning_level": "medium",
                "supported_reasoning_levels": [
                    {"effort": e, "description": e} for e in ("minimal", "low", "medium", "high")
                ],
                "shell_type": "unified_exec",
                "visibility": "list",
                "supported_in_api": True,
                "priority": 1,
                "availability_nux": None,
                "upgrade": None,
                "base_instructions": base_instructions or GENERIC_INSTRUCTIONS,
                "supports_reasoning_summaries": False,
                "support_verbosity": False,
                "default_verbosity": None,
                "apply_patch_tool_type": "freeform",
                "truncation_policy": {"mode": "bytes", "limit": 10000},
                "supports_parallel_tool_calls": False,
                "context_window": 128000,
                "experimental_supported_tools": [],
            }
        ]
    }


@dataclass(frozen=True)
class Invocation:
    argv: list[str]
    config_toml: str
    files: dict[str, str]  # extra files to write into CODEX_HOME, by name


def _toml_str(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(value, ensure_ascii=False)


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


def _toml_key(value: str) -> str:
    # A bare key when TOML allows one; "a.b" bare would be two nested tables.
    return value if re.fullmatch(r"[A-Za-z0-9_-]+", value) else _toml_str(value)


def secret_env_names(settings: TurnSettings) -> list[str]:
    """The env vars holding model keys: this turn's, and in a wall-bounce turn every provider's."""
    names = [settings.api_key_env]
    if settings.wall_bounce is not None:
        names += [p.api_key_env for p in settings.wall_bounce.providers]
    return list(dict.fromkeys(names))


def codex_sandbox(settings: TurnSettings, *, inner_sandbox: bool) -> str:
    """The Codex sandbox mode. Without a working inner sandbox (bubblewrap
    fails in restricted pods) Codex runs unconfined inside the pod, and the
    pod — read-only root, read-only workspace for read-only sessions, no
    capabilities, egress policy — is the boundary."""
    return CODEX_SANDBOX[settings.sandbox] if inner_sandbox else "danger-full-access"


def build_config(
    settings: TurnSettings, *, sandbox_mode: str, credential_file: str | None = None
) -> Invocation:
    """`credential_file`: the provider's key is read from this file before each
    request (its `auth.command`) instead of from `api_key_env`, so a running
    app-server sends whatever credential the file holds now: a warm runner
    writes each turn's session credential there."""
    provider = settings.provider_id
    lines = [
        "# Written by codex-runner for this turn.",
        f"model = {_toml_str(settings.model)}",
        f"model_provider = {_toml_str(provider)}",
        f"sandbox_mode = {_toml_str(sandbox_mode)}",
        'approval_policy = "never"',
        "check_for_update_on_startup = false",
    ]
    files: dict[str, str] = {}
    if settings.reasoning_effort:
        lines.append(f"model_reasoning_effort = {_toml_str(settings.reasoning_effort)}")
    if settings.verbosity:
        lines.append(f"model_verbosity = {_toml_str(settings.verbosity)}")
    if settings.model not in KNOWN_MODELS:
        files[CATALOG_FILE] = json.dumps(
            model_catalog(settings.model, base_instructions=settings.base_instructions)
        )
        lines.append(f"model_catalog_json = {_toml_str(settings.codex_home + '/' + CATALOG_FILE)}")
    if settings.base_instructions:
        files[INSTRUCTIONS_FILE] = settings.base_instructions
        lines.append(f"model_instructions_file = {_toml_str(settings.codex_home + '/' + INSTRUCTIONS_FILE)}")
    if settings.response_language:
        lines.append(
            f"developer_instructions = {_toml_str(f'Write your answers in the language {settings.response_language}.')}"
        )
    lines += [
        "",
        "[features]",
        "plugins = false",
        "",
        "[analytics]",
        "enabled = false",
        "",
        f"[model_providers.{_toml_key(provider)}]",
        f"name = {_toml_str(provider)}",
        f"base_url = {_toml_str(settings.base_url)}",
        *([] if credential_file else [f"env_key = {_toml_str(settings.api_key_env)}"]),
        'wire_api = "responses"',
        "request_max_retries = 1",
        "stream_max_retries = 1",
        "",
        "[shell_environment_policy]",
        'inherit = "core"',
        "ignore_default_excludes = false",
        f"exclude = {_toml_list([*SECRET_PATTERNS, *secret_env_names(settings)])}",
    ]
    if credential_file:
        lines += [
            "",
            f"[model_providers.{_toml_key(provider)}.auth]",
            'command = "/bin/cat"',
            f"args = {_toml_list([credential_file])}",
            # Read again for every request: the file changes between turns.
            "refresh_interval_ms = 1",
        ]
    if sandbox_mode == "workspace-write":
        # Only the workspace is writable: by default Codex also opens /tmp and $TMPDIR.
        lines += [
            "",
            "[sandbox_workspace_write]",
            "network_access = false",
            "exclude_slash_tmp = true",
            "exclude_tmpdir_env_var = true",
        ]
    return Invocation(argv=[], config_toml="\n".join(lines) + "\n", files=files)


def build_invocation(settings: TurnSettings, *, codex_bin: str, inner_sandbox: bool) -> Invocation:
    sandbox_mode = codex_sandbox(settings, inner_sandbox=inner_sandbox)
    config = build_config(settings, sandbox_mode=sandbox_mode)
    common = ["--json", "--skip-git-repo-check", "-c", f"sandbox_mode={_toml_str(sandbox_mode)}"]
    if settings.resume_thread_id:
        argv = [codex_bin, "exec", "resume", *common, "--", settings.resume_thread_id, settings.prompt]
    else:
        argv = [codex_bin, "exec", *common, "--", settings.prompt]
    return Invocation(argv=argv, config_toml=config.config_toml, files=config.files)
