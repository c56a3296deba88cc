"""The runner's wall-bounce loop (codex_runner.runner) with a stand-in `codex`
script: one run per provider in order, each seeing only its own key, a
marker line before each, one frame at the end, and no further run after
SIGTERM. The real Codex CLI is in tests/integration/test_runner_wall_bounce.py."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from codex_api.result import EXIT_COMPLETED, EXIT_TURN_FAILED, parse_frame
from codex_devenv.testkit import turn_settings, wall_bounce_provider, wall_bounce_settings
from codex_runner.runner import run_turn

FAKE_CODEX = r"""#!/bin/sh
provider=$(sed -n 's/^model_provider = "\(.*\)"$/\1/p' "$CODEX_HOME/config.toml")
keys=$(env | grep -o '^[A-Z0-9_]*_API_KEY' | sort | tr '\n' ' ')
if [ "$provider" = "$STOP_AT" ]; then kill -TERM "$PPID"; sleep 0.2; fi
echo '{"type":"thread.started","thread_id":"thread-'"$provider"'"}'
echo '{"type":"item.completed","item":{"type":"agent_message","text":"'"$provider sees $keys"'"}}'
echo '{"type":"turn.completed","usage":{"input_tokens":10,"output_tokens":1}}'
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    codex = tmp_path / "codex"
    codex.write_text(FAKE_CODEX)
    codex.chmod(codex.stat().st_mode | stat.S_IXUSR)
    for name in ("home", "workspace", "userhome"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("CODEX_BIN", str(codex))
    monkeypatch.setenv("CODEX_RUNNER_INNER_SANDBOX", "0")
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))
    for key in ("CODEX_MODEL_API_KEY", "P1_API_KEY", "P2_API_KEY", "P3_API_KEY"):
        monkeypatch.setenv(key, "sk-" + key.lower())
    return tmp_path


def run(home: Path, **bounce: object) -> tuple[int, str, str]:
    settings = turn_settings(
        codex_home=str(home / "home"),
        workspace=str(home / "workspace"),
        wall_bounce=wall_bounce_settings(*(wall_bounce_provider(i) for i in (1, 2, 3)), **bounce),  # type: ignore[arg-type]
    )
    out = io.StringIO()
    termination = home / "termination-log"
    code = run_turn(settings, out=out, termination_path=str(termination))
    return code, out.getvalue(), termination.read_text()


def test_one_run_per_provider_each_with_only_its_own_key(home: Path) -> None:
    code, out, termination = run(home, quality_threshold=0.0)
    assert code == EXIT_COMPLETED, out
    lines = [json.loads(line) for line in out.splitlines()[:-1]]
    markers = [line["wall_bounce_provider"] for line in lines if "wall_bounce_provider" in line]
    assert markers == ["p1", "p2", "p3"]
    assert [line["thread_id"] for line in lines if line.get("type") == "thread.started"] == [
        "thread-p1",
        "thread-p2",
        "thread-p3",
    ]
    result = parse_frame(out)
    assert result is not None and out.splitlines()[-1] == result.frame()
    assert parse_frame(termination) == result
    assert result.wall_bounce is not None
    assert [r.final_message for r in result.wall_bounce.runs] == [
        "p1 sees P1_API_KEY ",
        "p2 sees P2_API_KEY ",
        "p3 sees P3_API_KEY ",
    ]
    assert result.usage.input_tokens == 30 and result.duration_seconds is not None
    assert result.thread_id == f"thread-{result.wall_bounce.chosen_provider}"


def test_sigterm_stops_the_turn_before_the_next_provider(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOP_AT", "p2")
    code, out, _ = run(home, min_providers=2, quality_threshold=0.0)
    assert code == EXIT_TURN_FAILED, out
    result = parse_frame(out)
    assert result is not None and result.wall_bounce is not None
    markers = [
        json.loads(line)["wall_bounce_provider"]
        for line in out.splitlines()
        if "wall_bounce_provider" in line
    ]
    assert markers == ["p1", "p2"]  # p3 was never started
    # p2's Codex got the SIGTERM passed on and died of it
    assert [r.outcome for r in result.wall_bounce.runs] == ["completed", "internal_error", "turn_failed"]
    assert result.wall_bounce.runs[2].errors == ["not run: the runner was asked to stop"]
    assert result.errors == [
        "only 1 of 3 providers answered; wall-bounce needs 2",
        "p2: codex exited with -15",
        "p3: not run: the runner was asked to stop",
    ]
    assert result.final_message == "p1 sees P1_API_KEY "
