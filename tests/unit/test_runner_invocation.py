"""The Codex invocation and config.toml for a turn, exactly."""

from __future__ import annotations

import json
import tomllib

import pytest

from codex_devenv.testkit import turn_settings, wall_bounce_provider, wall_bounce_settings
from codex_runner.contract import TurnSettings
from codex_runner.invocation import build_invocation, codex_sandbox, secret_env_names
from codex_runner.runner import provider_settings


def _settings(**kw: object) -> TurnSettings:
    base = {
        "prompt": "Write factorial.py",
        "sandbox": "isolated",
        "provider_id": "fake",
        "base_url": "http://127.0.0.1:18080/v1",
    }
    return turn_settings(**{**base, **kw})


EXPECTED_CONFIG = """\
# Written by codex-runner for this turn.
model = "gpt-5-codex"
model_provider = "fake"
sandbox_mode = "workspace-write"
approval_policy = "never"
check_for_update_on_startup = false

[features]
plugins = false

[analytics]
enabled = false

[model_providers.fake]
name = "fake"
base_url = "http://127.0.0.1:18080/v1"
env_key = "CODEX_MODEL_API_KEY"
wire_api = "responses"
request_max_retries = 1
stream_max_retries = 1

[shell_environment_policy]
inherit = "core"
ignore_default_excludes = false
exclude = ["*KEY*", "*TOKEN*", "*SECRET*", "CODEX_MODEL_API_KEY"]

[sandbox_workspace_write]
network_access = false
exclude_slash_tmp = true
exclude_tmpdir_env_var = true
"""


def test_first_turn_exactly() -> None:
    inv = build_invocation(_settings(), codex_bin="/usr/bin/codex", inner_sandbox=True)
    assert inv.argv == [
        "/usr/bin/codex",
        "exec",
        "--json",
        "--skip-git-repo-check",
        "-c",
        'sandbox_mode="workspace-write"',
        "--",
        "Write factorial.py",
    ]
    assert inv.config_toml == EXPECTED_CONFIG
    assert inv.files == {}


def test_reply_resumes_the_thread_and_repasses_the_sandbox() -> None:
    inv = build_invocation(
        _settings(resume_thread_id="019a-thread", sandbox="read-only", prompt="-add tests"),
        codex_bin="codex",
        inner_sandbox=True,
    )
    assert inv.argv == [
        "codex",
        "exec",
        "resume",
        "--json",
        "--skip-git-repo-check",
        "-c",
        'sandbox_mode="read-only"',
        "--",
        "019a-thread",
        "-add tests",
    ]
    assert 'sandbox_mode = "read-only"' in inv.config_toml
    assert "[sandbox_workspace_write]" not in inv.config_toml


def test_optional_settings_and_instructions_file() -> None:
    inv = build_invocation(
        _settings(
            reasoning_effort="high",
            verbosity="low",
            base_instructions='Be "terse".\nNo fluff.',
            response_language="ja",
            model="my-local-model",
        ),
        codex_bin="codex",
        inner_sandbox=True,
    )
    config = tomllib.loads(inv.config_toml)
    assert config["model"] == "my-local-model"
    assert config["model_reasoning_effort"] == "high" and config["model_verbosity"] == "low"
    assert config["model_instructions_file"] == "/codex/home/base-instructions.md"
    assert inv.files["base-instructions.md"] == 'Be "terse".\nNo fluff.'
    catalog = json.loads(inv.files["model-catalog.json"])["models"][0]
    assert catalog["slug"] == "my-local-model" and catalog["base_instructions"] == 'Be "terse".\nNo fluff.'
    assert catalog["apply_patch_tool_type"] == "freeform" and catalog["shell_type"] == "unified_exec"
    assert config["model_catalog_json"] == "/codex/home/model-catalog.json"
    assert config["developer_instructions"] == "Write your answers in the language ja."


@pytest.mark.parametrize(
    ("sandbox", "inner", "expected"),
    [
        ("read-only", True, "read-only"),
        ("isolated", True, "workspace-write"),
        ("full-access", True, "danger-full-access"),
        ("read-only", False, "danger-full-access"),
        ("isolated", False, "danger-full-access"),
    ],
)
def test_sandbox_mapping_with_and_without_an_inner_sandbox(sandbox: str, inner: bool, expected: str) -> None:
    assert codex_sandbox(_settings(sandbox=sandbox), inner_sandbox=inner) == expected
    config = tomllib.loads(
        build_invocation(_settings(sandbox=sandbox), codex_bin="c", inner_sandbox=inner).config_toml
    )
    assert config["sandbox_mode"] == expected


def test_config_is_valid_toml_for_hostile_values() -> None:
    inv = build_invocation(
        _settings(base_url='http://x/v1"\n[evil]\nkey = "1', api_key_env="MY_KEY", model='m"\nx = 1'),
        codex_bin="codex",
        inner_sandbox=True,
    )
    config = tomllib.loads(inv.config_toml)
    assert "evil" not in config
    assert config["model"] == 'm"\nx = 1'
    assert config["model_providers"]["fake"]["base_url"] == 'http://x/v1"\n[evil]\nkey = "1'
    assert config["shell_environment_policy"]["exclude"] == ["*KEY*", "*TOKEN*", "*SECRET*", "MY_KEY"]


@pytest.mark.parametrize("provider", ["gem.ini", "a b", 'x"]\n[evil]', "日本"])
def test_provider_ids_that_are_not_bare_keys_are_quoted(provider: str) -> None:
    config = tomllib.loads(
        build_invocation(_settings(provider_id=provider), codex_bin="c", inner_sandbox=True).config_toml
    )
    assert config["model_provider"] == provider
    assert list(config["model_providers"]) == [provider]
    assert "evil" not in config


def test_wall_bounce_run_is_a_normal_turn_with_the_providers_endpoint_and_all_keys_excluded() -> None:
    bounce = wall_bounce_settings(
        wall_bounce_provider(1, model="model-one", base_url="http://127.0.0.1:1/v1"),
        wall_bounce_provider(2, provider_id="two", api_key_env="ANTHROPIC_CREDENTIAL", model="gpt-5"),
    )
    settings = _settings(sandbox="read-only", wall_bounce=bounce)
    assert secret_env_names(settings) == ["CODEX_MODEL_API_KEY", "P1_API_KEY", "ANTHROPIC_CREDENTIAL"]
    assert secret_env_names(_settings()) == ["CODEX_MODEL_API_KEY"]

    second = provider_settings(settings, bounce.providers[1])
    assert second == _settings(
        sandbox="read-only",
        wall_bounce=bounce,
        provider_id="two",
        base_url="http://127.0.0.1:18082/v1",
        api_key_env="ANTHROPIC_CREDENTIAL",
        model="gpt-5",
    )
    inv = build_invocation(second, codex_bin="codex", inner_sandbox=True)
    assert inv.argv == [
        "codex",
        "exec",
        "--json",
        "--skip-git-repo-check",
        "-c",
        'sandbox_mode="read-only"',
        "--",
        "Write factorial.py",
    ]
    config = tomllib.loads(inv.config_toml)
    assert (config["model"], config["model_provider"]) == ("gpt-5", "two")
    assert config["model_providers"]["two"] == {
        "name": "two",
        "base_url": "http://127.0.0.1:18082/v1",
        "env_key": "ANTHROPIC_CREDENTIAL",
        "wire_api": "responses",
        "request_max_retries": 1,
        "stream_max_retries": 1,
    }
    # commands the model runs see no provider's key, not only this run's
    assert config["shell_environment_policy"]["exclude"] == [
        "*KEY*",
        "*TOKEN*",
        "*SECRET*",
        "ANTHROPIC_CREDENTIAL",
        "P1_API_KEY",
    ]
    assert "model_catalog_json" not in config  # gpt-5 is a known slug

    first = build_invocation(
        provider_settings(settings, bounce.providers[0]), codex_bin="c", inner_sandbox=True
    )
    assert "model-catalog.json" in first.files
    assert tomllib.loads(first.config_toml)["model_providers"]["p1"]["base_url"] == "http://127.0.0.1:1/v1"


def test_a_credential_file_replaces_the_key_variable() -> None:
    """A warm runner's config: the provider reads its credential from a file before every
    request (so a running app-server picks up each turn's), and no variable names a key."""
    from codex_runner.invocation import build_config

    settings = turn_settings(provider_id="openai-api")
    config = tomllib.loads(
        build_config(settings, sandbox_mode="read-only", credential_file='/run/codex/cred "x"').config_toml
    )
    provider = config["model_providers"]["openai-api"]
    assert "env_key" not in provider
    assert provider["auth"] == {
        "command": "/bin/cat",
        "args": ['/run/codex/cred "x"'],
        "refresh_interval_ms": 1,
    }
    # The key variable is still kept out of the model's commands' environment.
    assert settings.api_key_env in config["shell_environment_policy"]["exclude"]
    plain = tomllib.loads(build_config(settings, sandbox_mode="read-only").config_toml)
    assert plain["model_providers"]["openai-api"]["env_key"] == settings.api_key_env
    assert "auth" not in plain["model_providers"]["openai-api"]
