"""A wall-bounce turn in the runner (codex-runner) with the REAL Codex CLI:
three scripted fake models on 127.0.0.1, each its own provider with its own
key, asked one after the other in one CODEX_HOME, then compared."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from codex_api.result import EXIT_COMPLETED, EXIT_TURN_FAILED, parse_frame
from codex_api.session import Usage
from codex_devenv import fake_model as fm
from codex_devenv.runner_process import RunnerRun, run_runner_process, runner_dirs
from codex_devenv.testkit import turn_settings, wall_bounce_provider, wall_bounce_settings
from codex_runner.contract import runner_args

KEYS = {f"P{i}_API_KEY": f"sk-provider-{i}-abcdefghijklmnopqrstuvwxyz" for i in (1, 2, 3)}
DEFAULT_KEY = "sk-default-endpoint-abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def servers() -> Iterator[list[fm.FakeModelServer]]:
    with fm.FakeModelServer() as one, fm.FakeModelServer() as two, fm.FakeModelServer() as three:
        yield [one, two, three]


@pytest.fixture
def models(servers: list[fm.FakeModelServer]) -> Iterator[list[fm.FakeModelServer]]:
    for server in servers:
        server.reset()
    yield servers
    for server in servers:
        assert server.errors == []


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    return runner_dirs(tmp_path)


def run_wall_bounce(
    models: list[fm.FakeModelServer],
    dirs: dict[str, Path],
    *,
    min_providers: int = 2,
    quality_threshold: float = 0.7,
) -> RunnerRun:
    bounce = wall_bounce_settings(
        *(
            wall_bounce_provider(i, base_url=server.url, model="fake-model")
            for i, server in enumerate(models, start=1)
        ),
        min_providers=min_providers,
        quality_threshold=quality_threshold,
    )
    # The top-level endpoint is the default one; a wall-bounce turn does not use it.
    settings = turn_settings(
        prompt="What is 6 * 7?",
        model="fake-model",
        sandbox="read-only",
        provider_id="default",
        base_url="http://127.0.0.1:9/v1",
        codex_home=str(dirs["home"]),
        workspace=str(dirs["workspace"]),
        wall_bounce=bounce,
    )
    return run_runner_process(runner_args(settings), dirs, api_key=DEFAULT_KEY, extra_env=KEYS, timeout=120)


def usage(input_tokens: int, output_tokens: int) -> fm.Usage:
    return fm.Usage(
        input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=10, reasoning_tokens=2
    )


def test_all_agree(models: list[fm.FakeModelServer], dirs: dict[str, Path]) -> None:
    for i, server in enumerate(models, start=1):
        server.set_script(fm.say("6 * 7 = 42.", usage=usage(100 * i, i)))
    run = run_wall_bounce(models, dirs)
    assert run.code == EXIT_COMPLETED, run.stdout + run.stderr
    result = run.result
    assert result.outcome == "completed" and result.errors == []
    assert result.final_message == "6 * 7 = 42."
    wb = result.wall_bounce
    assert wb is not None
    assert wb.providers_used == ["p1", "p2", "p3"]
    assert (wb.consensus_score, wb.confidence_score, wb.chosen_provider) == (1.0, 1.0, "p1")
    assert (wb.min_providers, wb.quality_threshold) == (2, 0.7)
    assert [r.usage.input_tokens for r in wb.runs] == [100, 200, 300]
    assert result.usage == Usage(
        input_tokens=600, cached_input_tokens=30, output_tokens=6, reasoning_tokens=6
    )
    assert all(r.model == "fake-model" and r.duration_seconds for r in wb.runs)

    # each server got exactly its own run, with its own key
    for i, server in enumerate(models, start=1):
        requests = server.responses_requests
        assert len(requests) == 1
        assert requests[0].authorization == f"Bearer {KEYS[f'P{i}_API_KEY']}"
        assert "What is 6 * 7?" in " ".join(requests[0].user_texts())

    # the log: a marker, then that run's events; three threads; the frame last
    events = run.events()
    markers = [i for i, e in enumerate(events) if "wall_bounce_provider" in e]
    assert [events[i]["wall_bounce_provider"] for i in markers] == ["p1", "p2", "p3"]
    threads = [e["thread_id"] for e in events if e.get("type") == "thread.started"]
    assert len(set(threads)) == 3
    assert all(
        markers[k] < events.index(next(e for e in events if e.get("thread_id") == t))
        for k, t in enumerate(threads)
    )
    assert result.thread_id == threads[0]
    assert run.stdout.splitlines()[-1] == result.frame()
    assert parse_frame(run.termination) == result
    # every thread has its rollout in the one CODEX_HOME
    for thread in threads:
        assert list(dirs["home"].glob(f"sessions/**/rollout-*{thread}.jsonl"))
    config = (dirs["home"] / "config.toml").read_text()
    assert 'model_provider = "p3"' in config  # the last run's
    assert not any(key in config for key in [*KEYS.values(), DEFAULT_KEY])


def test_answers_differ_a_lot(models: list[fm.FakeModelServer], dirs: dict[str, Path]) -> None:
    models[0].set_script(fm.say("42"))
    models[1].set_script(fm.say("Bananas are an excellent source of potassium."))
    models[2].set_script(fm.say("I cannot help with multiplication questions today, sorry."))
    run = run_wall_bounce(models, dirs, quality_threshold=0.6)
    assert run.code == EXIT_TURN_FAILED, run.stdout + run.stderr
    result = run.result
    wb = result.wall_bounce
    assert result.outcome == "turn_failed" and wb is not None and wb.consensus_score is not None
    assert wb.consensus_score < 0.6
    assert result.errors == [f"consensus {wb.consensus_score:.2f} is below the quality threshold 0.60"]
    assert wb.providers_used == ["p1", "p2", "p3"]
    assert wb.chosen_provider is not None
    chosen = next(r for r in wb.runs if r.provider == wb.chosen_provider)
    assert result.final_message and result.final_message == chosen.final_message


@pytest.mark.parametrize(("min_providers", "code"), [(2, EXIT_COMPLETED), (3, EXIT_TURN_FAILED)])
def test_one_provider_fails(
    models: list[fm.FakeModelServer], dirs: dict[str, Path], min_providers: int, code: int
) -> None:
    models[0].set_script(fm.say("The answer is 42.", usage=usage(50, 5)))
    models[1].set_script(then=fm.http_error(500))
    models[2].set_script(fm.say("The answer is 42.", usage=usage(70, 7)))
    run = run_wall_bounce(models, dirs, min_providers=min_providers)
    assert run.code == code, run.stdout + run.stderr
    result = run.result
    wb = result.wall_bounce
    assert wb is not None
    assert wb.providers_used == ["p1", "p3"]
    assert [r.outcome for r in wb.runs] == ["completed", "turn_failed", "completed"]
    assert wb.runs[1].errors and wb.runs[1].final_message is None
    assert len(models[1].responses_requests) >= 1  # it was asked (and retried)
    assert wb.consensus_score == 1.0 and wb.chosen_provider == "p1"
    assert result.final_message == "The answer is 42."
    assert result.usage.input_tokens == 120 and result.usage.output_tokens == 12
    if min_providers == 2:
        assert result.outcome == "completed"
        assert result.errors and all(e.startswith("p2: ") for e in result.errors)
    else:
        assert result.outcome == "turn_failed"
        assert result.errors[0] == "only 2 of 3 providers answered; wall-bounce needs 3"
        assert result.errors[1].startswith("p2: ")
    assert parse_frame(run.termination) == result
