"""Which model provider ids the pinned Codex CLI accepts, through the runner's
own config.toml (codex_runner.invocation.build_config) and the REAL binary,
against the scripted fake model on 127.0.0.1.

Codex 0.171 refuses a `[model_providers.<id>]` table whose id is one of its
built-in providers, and with it the whole config.toml: every turn fails. The
shipped default once was `openai` and so no session of a default install
could run. codex_api.config.RESERVED_CODEX_PROVIDER_IDS (refused by the
config validator) must hold exactly the ids the binary refuses, and the
default id must be one it accepts; this runs both directions."""

from __future__ import annotations

from pathlib import Path

import pytest

from codex_api.config import DEFAULT_PROVIDER_ID, RESERVED_CODEX_PROVIDER_IDS, ModelEndpointConfig
from codex_api.result import EXIT_COMPLETED
from codex_devenv import fake_model as fm
from codex_devenv.runner_process import RunnerRun, run_runner_process, runner_dirs
from codex_devenv.testkit import turn_settings
from codex_runner.contract import runner_args

API_KEY = "sk-provider-ids-0123456789abcdef"


def _turn(model: fm.FakeModelServer, tmp_path: Path, provider_id: str) -> RunnerRun:
    dirs = runner_dirs(tmp_path)
    settings = turn_settings(
        prompt="Say hello",
        model="fake-model",
        sandbox="read-only",
        provider_id=provider_id,
        base_url=model.url,
        codex_home=str(dirs["home"]),
        workspace=str(dirs["workspace"]),
    )
    return run_runner_process(runner_args(settings), dirs, api_key=API_KEY)


def test_the_default_provider_id_runs_a_turn(fake: fm.FakeModelServer, tmp_path: Path) -> None:
    assert ModelEndpointConfig().provider_id == DEFAULT_PROVIDER_ID
    fake.set_script(fm.say("Hello through the default provider id."))
    run = _turn(fake, tmp_path, DEFAULT_PROVIDER_ID)
    assert run.code == EXIT_COMPLETED, run.stdout + run.stderr
    assert run.result.final_message == "Hello through the default provider id."
    assert f"[model_providers.{DEFAULT_PROVIDER_ID}]" in (tmp_path / "home" / "config.toml").read_text()
    assert fake.responses_requests[0].authorization == f"Bearer {API_KEY}"


@pytest.mark.parametrize("provider_id", RESERVED_CODEX_PROVIDER_IDS)
def test_codex_refuses_every_reserved_provider_id(
    fake: fm.FakeModelServer, tmp_path: Path, provider_id: str
) -> None:
    fake.set_script(fm.say("never asked"))
    run = _turn(fake, tmp_path, provider_id)
    out = run.stdout + run.stderr
    assert run.code != EXIT_COMPLETED, out
    # openai, ollama, lmstudio: "reserved built-in provider IDs: `openai`"; amazon-bedrock:
    # "model_providers.amazon-bedrock only supports changing `base_url`, ...".
    assert f"`{provider_id}`" in out or f"model_providers.{provider_id} only supports" in out, out
    assert fake.responses_requests == []  # refused while loading the config, before any request


@pytest.mark.parametrize("provider_id", ["openai-custom", "ollama-local", "lmstudio-api", "bedrock"])
def test_codex_accepts_ids_near_the_reserved_ones(
    fake: fm.FakeModelServer, tmp_path: Path, provider_id: str
) -> None:
    # The check is an exact match: the validator must not refuse more than Codex does.
    fake.set_script(fm.say("ok"))
    run = _turn(fake, tmp_path, provider_id)
    assert run.code == EXIT_COMPLETED, run.stdout + run.stderr
    assert ModelEndpointConfig(provider_id=provider_id).provider_id == provider_id
