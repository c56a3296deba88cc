"""The runner's command line (codex_runner.contract): the operator writes it,
the runner reads it, and parse_runner_args(runner_args(t)) == t always."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from typing import Any

import pytest

from codex_api.config import ModelEndpointConfig
from codex_api.session import CodexSessionSpec
from codex_devenv.testkit import turn_settings, wall_bounce_provider, wall_bounce_settings
from codex_runner.contract import (
    MAX_ARG_BYTES,
    MODES,
    REASONING_EFFORTS,
    RUNNER_COMMAND,
    SANDBOXES,
    VERBOSITIES,
    RunnerArgsError,
    TurnSettings,
    WallBounceProvider,
    WallBounceSettings,
    parse_runner_args,
    runner_args,
    turn_settings_for,
    usage,
)

settings = turn_settings


TRICKY_TEXT = [
    "plain prompt",
    "日本語で説明してください 🚀 — ünïcödé",
    "line one\nline two\n\n\tindented\r\nwindows line",
    "--",
    "--help",
    "-h",
    "--prompt",
    "--model=evil",
    "--full-auto",
    "-1",
    "- leading dash and spaces",
    "-- leading double dash and spaces",
    "=",
    "a=b=c",
    "%(prog)s %s %% {}",
    "'single' \"double\" `back` $HOME $(id) ;|&",
    " leading and trailing spaces ",
    "\\backslash\\",
    "run",
    "@file",
    "\u200b\ufeffzero-width",
]


@pytest.mark.parametrize("prompt", TRICKY_TEXT)
def test_round_trip_of_tricky_prompts(prompt: str) -> None:
    t = settings(prompt=prompt)
    args = runner_args(t)
    assert args[args.index("--prompt") + 1] == prompt
    assert parse_runner_args(args) == t


@pytest.mark.parametrize("text", TRICKY_TEXT)
def test_round_trip_of_tricky_free_text_in_every_free_field(text: str) -> None:
    t = settings(
        base_instructions=text, resume_thread_id=text, model=text, provider_id=text, api_key_env=text
    )
    assert parse_runner_args(runner_args(t)) == t


MATRIX = list(
    itertools.product(
        SANDBOXES,
        MODES,
        (False, True),
        (None, *REASONING_EFFORTS),
        (None, *VERBOSITIES),
        (None, "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
    )
)


@pytest.mark.parametrize(("sandbox", "mode", "full_auto", "effort", "verbosity", "resume"), MATRIX)
def test_round_trip_matrix(
    sandbox: str, mode: str, full_auto: bool, effort: str | None, verbosity: str | None, resume: str | None
) -> None:
    t = settings(
        sandbox=sandbox,
        mode=mode,
        full_auto=full_auto,
        reasoning_effort=effort,
        verbosity=verbosity,
        resume_thread_id=resume,
    )
    assert parse_runner_args(runner_args(t)) == t


def test_round_trip_random_settings() -> None:
    rng = random.Random(20261101)
    alphabet = "ab -=\n\t\"'\\é日🚀%$"

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))

    def maybe(value: str) -> str | None:
        return None if rng.random() < 0.4 else value

    def wall_bounce() -> WallBounceSettings:
        count = rng.randint(2, 8)
        providers = tuple(
            WallBounceProvider(
                provider_id=f"{i}{text()}"[:64],
                base_url=rng.choice(["http://", "https://"]) + text(),
                api_key_env=f"{i}{text()}",
                model=text(),
            )
            for i in range(count)
        )
        return WallBounceSettings(
            providers=providers,
            min_providers=rng.randint(1, count),
            quality_threshold=rng.choice([0, 1, 0.5, rng.random()]),
        )

    for _ in range(500):
        bounce = rng.random() < 0.3
        t = TurnSettings(
            prompt=rng.choice(["-", "--"]) * rng.randint(0, 1) + text(),
            model=text(),
            sandbox="read-only" if bounce else rng.choice(SANDBOXES),  # type: ignore[arg-type]
            mode=rng.choice(MODES),
            full_auto=rng.random() < 0.5,
            reasoning_effort=maybe(rng.choice(REASONING_EFFORTS)),
            verbosity=maybe(rng.choice(VERBOSITIES)),
            base_instructions=maybe(rng.choice(["", text()])),
            response_language=maybe(rng.choice(["en", "ja", "pt-BR"])),
            resume_thread_id=None if bounce else maybe(text()),
            provider_id=text(),
            base_url=text(),
            api_key_env=text(),
            codex_home=rng.choice(["/codex/home", "/state/codex"]),
            workspace=rng.choice(["/workspace", "/src"]),
            wall_bounce=wall_bounce() if bounce else None,
        )
        assert parse_runner_args(runner_args(t)) == t, t


def test_round_trip_of_largest_possible_prompt() -> None:
    t = settings(prompt="é" * (MAX_ARG_BYTES // 2))
    assert parse_runner_args(runner_args(t)) == t


def test_runner_args_minimal_shape() -> None:
    assert RUNNER_COMMAND == ["codex-runner"]
    assert runner_args(settings()) == [
        "run",
        "--model",
        "gpt-5-codex",
        "--sandbox",
        "read-only",
        "--mode",
        "interactive",
        "--provider-id",
        "openai-api",
        "--base-url",
        "https://api.openai.com/v1",
        "--api-key-env",
        "CODEX_MODEL_API_KEY",
        "--codex-home",
        "/codex/home",
        "--workspace",
        "/workspace",
        "--prompt",
        "Explain this repository",
    ]


def test_runner_args_full_shape() -> None:
    t = settings(
        sandbox="isolated",
        mode="ci",
        full_auto=True,
        reasoning_effort="high",
        verbosity="low",
        base_instructions="Be terse.",
        response_language="ja",
        resume_thread_id="thread-1",
        codex_home="/state/home",
        workspace="/src",
    )
    assert runner_args(t) == [
        "run",
        "--model",
        "gpt-5-codex",
        "--sandbox",
        "isolated",
        "--mode",
        "ci",
        "--full-auto",
        "--reasoning-effort",
        "high",
        "--verbosity",
        "low",
        "--response-language",
        "ja",
        "--resume-thread-id",
        "thread-1",
        "--provider-id",
        "openai-api",
        "--base-url",
        "https://api.openai.com/v1",
        "--api-key-env",
        "CODEX_MODEL_API_KEY",
        "--codex-home",
        "/state/home",
        "--workspace",
        "/src",
        "--base-instructions",
        "Be terse.",
        "--prompt",
        "Explain this repository",
    ]


def test_runner_args_are_deterministic_strings() -> None:
    t = settings(full_auto=True, base_instructions="")
    assert runner_args(t) == runner_args(t)
    assert all(isinstance(a, str) for a in runner_args(t))
    # An empty base_instructions is set (it replaces the defaults with nothing); None is not.
    assert "--base-instructions" in runner_args(t)
    assert "--base-instructions" not in runner_args(settings())


def test_parse_accepts_equals_form() -> None:
    t = settings()
    joined = ["run"] + [f"{a}={b}" for a, b in zip(runner_args(t)[1::2], runner_args(t)[2::2], strict=True)]
    assert parse_runner_args(joined) == t


def test_parse_fills_defaults_for_home_and_workspace() -> None:
    args = runner_args(settings())
    i = args.index("--codex-home")
    del args[i : i + 4]
    assert parse_runner_args(args) == settings()


REQUIRED = ["--model", "--sandbox", "--mode", "--provider-id", "--base-url", "--api-key-env", "--prompt"]


def _without(flag: str) -> list[str]:
    args = runner_args(settings())
    i = args.index(flag)
    del args[i : i + 2]
    return args


BAD_ARGV: list[tuple[str, list[str], str]] = [
    ("empty", [], "expected the subcommand 'run', got nothing"),
    ("wrong subcommand", ["exec", *runner_args(settings())[1:]], "expected the subcommand 'run', got 'exec'"),
    ("unknown option", [*runner_args(settings()), "--bogus", "x"], "unrecognized option: '--bogus'"),
    ("stray positional", [*runner_args(settings()), "extra"], "unrecognized argument: 'extra'"),
    ("abbreviation", ["run", "--mod", "x"], "unrecognized option: '--mod'"),
    ("help is not special", [*runner_args(settings()), "--help"], "unrecognized option: '--help'"),
    ("bad sandbox", [*runner_args(settings(sandbox="isolated"))[:4], "root"], "argument --sandbox"),
    (
        "bad sandbox value",
        [x if x != "read-only" else "workspace-write" for x in runner_args(settings())],
        "argument --sandbox: invalid choice 'workspace-write'",
    ),
    (
        "bad mode",
        [x if x != "interactive" else "batch" for x in runner_args(settings())],
        "argument --mode: invalid choice 'batch'",
    ),
    (
        "bad reasoning effort",
        [*runner_args(settings()), "--reasoning-effort", "extreme"],
        "argument --reasoning-effort: invalid choice 'extreme'",
    ),
    (
        "bad verbosity",
        [*runner_args(settings()), "--verbosity", "loud"],
        "argument --verbosity: invalid choice 'loud'",
    ),
    ("missing value at end", [*_without("--prompt"), "--prompt"], "argument --prompt: expected one value"),
    ("duplicate option", [*runner_args(settings()), "--model", "other"], "--model given more than once"),
    ("duplicate flag", [*runner_args(settings(full_auto=True)), "--full-auto"], "--full-auto given more"),
    (
        "flag with a value",
        [*runner_args(settings()), "--full-auto=yes"],
        "argument --full-auto: takes no value, got 'yes'",
    ),
    (
        "relative workspace",
        [*_without("--workspace"), "--workspace", "src"],
        "workspace must be a normalized",
    ),
    (
        "nested home",
        [*_without("--codex-home"), "--codex-home", "/workspace/.codex"],
        "must not contain each other",
    ),
    ("empty prompt", [*_without("--prompt"), "--prompt", ""], "prompt must not be empty"),
    ("empty model", [*_without("--model"), "--model", ""], "model must not be empty"),
]


@pytest.mark.parametrize(("argv", "message"), [(b[1], b[2]) for b in BAD_ARGV], ids=[b[0] for b in BAD_ARGV])
def test_parse_errors_are_value_errors_not_exits(argv: list[str], message: str) -> None:
    with pytest.raises(RunnerArgsError) as caught:
        parse_runner_args(argv)
    assert isinstance(caught.value, ValueError)
    assert message in str(caught.value)


@pytest.mark.parametrize("flag", REQUIRED)
def test_parse_names_each_missing_required_option(flag: str) -> None:
    with pytest.raises(RunnerArgsError, match=f"the following arguments are required: {flag}"):
        parse_runner_args(_without(flag))


def test_parse_refuses_a_plain_string() -> None:
    with pytest.raises(RunnerArgsError, match="expected a list of words"):
        parse_runner_args("run --prompt hi")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sandbox": "danger-full-access"}, "sandbox must be one of read-only, isolated, full-access"),
        ({"mode": "batch"}, "mode must be one of"),
        ({"reasoning_effort": "max"}, "reasoning_effort must be one of"),
        ({"verbosity": "loud"}, "verbosity must be one of"),
        ({"prompt": ""}, "prompt must not be empty"),
        ({"prompt": "a\x00b"}, "prompt must not contain a NUL character"),
        ({"base_instructions": "\x00"}, "base_instructions must not contain a NUL"),
        ({"prompt": "x" * (MAX_ARG_BYTES + 1)}, f"at most {MAX_ARG_BYTES} bytes"),
        ({"prompt": "日" * (MAX_ARG_BYTES // 3 + 1)}, "prompt is 131073 bytes in UTF-8"),
        ({"codex_home": "codex"}, "codex_home must be a normalized absolute path"),
        ({"workspace": "/work/../etc"}, "workspace must be a normalized absolute path"),
        ({"workspace": "/codex/home/ws"}, "must not contain each other"),
        ({"codex_home": "/workspace"}, "must not contain each other"),
    ],
)
def test_invalid_settings_cannot_be_built(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(RunnerArgsError) as caught:
        settings(**overrides)
    assert message in str(caught.value)


def test_settings_are_frozen() -> None:
    t = settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.prompt = "other"  # type: ignore[misc]


def test_turn_settings_for_copies_the_spec_and_endpoint() -> None:
    spec = CodexSessionSpec.model_validate(
        {
            "prompt": "Fix the flaky test",
            "sandbox": "isolated",
            "mode": "ci",
            "fullAuto": True,
            "reasoningEffort": "medium",
            "verbosity": "high",
            "baseInstructions": "Only touch tests/",
            "responseLanguage": "pt-BR",
            "model": "ignored-here",
        }
    )
    endpoint = ModelEndpointConfig(
        provider_id="fake", base_url="http://127.0.0.1:8080/v1", api_key_env="FAKE_KEY"
    )
    t = turn_settings_for(spec, model="gpt-5-codex", resume_thread_id="thread-9", endpoint=endpoint)
    assert t == TurnSettings(
        prompt="Fix the flaky test",
        model="gpt-5-codex",
        sandbox="isolated",
        mode="ci",
        full_auto=True,
        reasoning_effort="medium",
        verbosity="high",
        base_instructions="Only touch tests/",
        response_language="pt-BR",
        resume_thread_id="thread-9",
        provider_id="fake",
        base_url="http://127.0.0.1:8080/v1",
        api_key_env="FAKE_KEY",
        codex_home="/codex/home",
        workspace="/workspace",
    )
    assert parse_runner_args(runner_args(t)) == t


def test_turn_settings_for_defaults() -> None:
    spec = CodexSessionSpec(prompt="hi")
    t = turn_settings_for(spec, model="m", resume_thread_id=None, endpoint=ModelEndpointConfig())
    assert (t.sandbox, t.mode, t.full_auto) == ("read-only", "interactive", False)
    assert (t.reasoning_effort, t.verbosity, t.base_instructions, t.resume_thread_id) == (None,) * 4
    assert (t.provider_id, t.base_url, t.api_key_env) == (
        "openai-api",
        "https://api.openai.com/v1",
        "CODEX_MODEL_API_KEY",
    )


def test_usage_lists_every_flag() -> None:
    text = usage()
    assert text.startswith("usage: codex-runner run --model MODEL --sandbox {read-only,isolated,full-access}")
    for flag in [*REQUIRED, "--full-auto", "--reasoning-effort", "--verbosity", "--resume-thread-id"]:
        assert flag in text
    assert "[--full-auto]" in text
    assert "[--base-instructions BASE_INSTRUCTIONS]" in text
    assert "[--wall-bounce JSON]" in text


def test_errors_quote_a_long_stray_word_briefly() -> None:
    stray = "x" * 100_000
    with pytest.raises(RunnerArgsError) as caught:
        parse_runner_args([*runner_args(settings()), stray])
    assert len(str(caught.value)) < 200
    assert "unrecognized argument: 'xxx" in str(caught.value)


# --------------------------------------------------------------------------- wall-bounce

THREE = wall_bounce_settings(
    wall_bounce_provider(1),
    wall_bounce_provider(2, model="claude-x", base_url="https://api.example.com/v1"),
    wall_bounce_provider(3, provider_id="gem.ini", api_key_env="GEMINI_KEY"),
    min_providers=2,
    quality_threshold=0.6,
)


def test_wall_bounce_round_trip_and_canonical_json() -> None:
    t = settings(wall_bounce=THREE)
    args = runner_args(t)
    value = args[args.index("--wall-bounce") + 1]
    assert value == json.dumps(
        {
            "min_providers": 2,
            "providers": [dataclasses.asdict(p) for p in THREE.providers],
            "quality_threshold": 0.6,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    assert value.startswith('{"min_providers":2,"providers":[{"api_key_env":"P1_API_KEY","base_url":')
    # short settings first, long free text last
    assert args.index("--workspace") < args.index("--wall-bounce") < args.index("--prompt")
    assert parse_runner_args(args) == t
    assert "--wall-bounce" not in runner_args(settings())
    assert settings().wall_bounce is None


@pytest.mark.parametrize("text", TRICKY_TEXT)
def test_wall_bounce_round_trip_of_tricky_text(text: str) -> None:
    bounce = wall_bounce_settings(
        wall_bounce_provider(1, provider_id=text[:64], model=text, api_key_env=text),
        wall_bounce_provider(2, base_url="https://" + text),
    )
    t = settings(wall_bounce=bounce, prompt=text)
    assert parse_runner_args(runner_args(t)) == t


def test_wall_bounce_threshold_is_a_float_and_providers_a_tuple() -> None:
    bounce = WallBounceSettings(
        providers=[wall_bounce_provider(1), wall_bounce_provider(2)],  # type: ignore[arg-type]
        min_providers=2,
        quality_threshold=1,
    )
    assert isinstance(bounce.providers, tuple)
    assert isinstance(bounce.quality_threshold, float) and bounce.quality_threshold == 1.0
    t = settings(wall_bounce=bounce)
    assert parse_runner_args(runner_args(t)) == t


def test_wall_bounce_equals_form() -> None:
    t = settings(wall_bounce=THREE)
    args = runner_args(t)
    i = args.index("--wall-bounce")
    args[i : i + 2] = [f"--wall-bounce={args[i + 1]}"]
    assert parse_runner_args(args) == t


def test_turn_settings_for_passes_wall_bounce_through() -> None:
    spec = CodexSessionSpec(prompt="hi")
    t = turn_settings_for(
        spec, model="m", resume_thread_id=None, endpoint=ModelEndpointConfig(), wall_bounce=THREE
    )
    assert t.wall_bounce == THREE
    assert parse_runner_args(runner_args(t)) == t
    assert (
        turn_settings_for(spec, model="m", resume_thread_id=None, endpoint=ModelEndpointConfig()).wall_bounce
        is None
    )


def _bounce_json(**overrides: Any) -> str:
    body: dict[str, Any] = json.loads(THREE.to_json())
    body.update(overrides)
    return json.dumps(body)


def _with_bounce(value: str) -> list[str]:
    return [*runner_args(settings()), "--wall-bounce", value]


BAD_WALL_BOUNCE: list[tuple[str, str, str]] = [
    ("malformed JSON", '{"providers": [', "argument --wall-bounce: not valid JSON"),
    ("not an object", "[1, 2]", "argument --wall-bounce: the value must be a JSON object, got a list"),
    ("unknown key", _bounce_json(extra=1), "the value has unknown keys: 'extra'"),
    (
        "missing key",
        json.dumps({"providers": json.loads(THREE.to_json())["providers"], "min_providers": 2}),
        "the value is missing keys: quality_threshold",
    ),
    ("providers not a list", _bounce_json(providers={"a": 1}), "providers must be a list, got an object"),
    ("provider not an object", _bounce_json(providers=["p1", "p2"]), "providers[0] must be a JSON object"),
    (
        "provider unknown key",
        _bounce_json(providers=[{**dataclasses.asdict(p), "api_key": "sk-x"} for p in THREE.providers]),
        "providers[0] has unknown keys: 'api_key'",
    ),
    (
        "provider missing key",
        _bounce_json(providers=[{"provider_id": "a", "base_url": "http://a", "model": "m"}] * 2),
        "providers[0] is missing keys: api_key_env",
    ),
    (
        "provider wrong type",
        _bounce_json(providers=[{**dataclasses.asdict(p), "model": 5} for p in THREE.providers]),
        "providers[0].model must be a string, got a number",
    ),
    (
        "min_providers a string",
        _bounce_json(min_providers="2"),
        "min_providers must be an integer, got a string",
    ),
    (
        "min_providers a float",
        _bounce_json(min_providers=2.0),
        "min_providers must be an integer, got a number",
    ),
    (
        "min_providers a bool",
        _bounce_json(min_providers=True),
        "min_providers must be an integer, got a boolean",
    ),
    (
        "threshold a string",
        _bounce_json(quality_threshold="0.5"),
        "quality_threshold must be a number, got a string",
    ),
    ("threshold null", _bounce_json(quality_threshold=None), "quality_threshold must be a number, got null"),
    (
        "threshold NaN",
        _bounce_json(quality_threshold=float("nan")),
        "quality_threshold must be between 0 and 1",
    ),
    ("threshold above 1", _bounce_json(quality_threshold=1.5), "quality_threshold must be between 0 and 1"),
    ("min_providers 0", _bounce_json(min_providers=0), "min_providers must be between 1 and the number"),
    ("min_providers too many", _bounce_json(min_providers=4), "(3), got 4"),
    (
        "one provider",
        _bounce_json(providers=json.loads(THREE.to_json())["providers"][:1]),
        "2 to 8 providers, got 1",
    ),
    (
        "nine providers",
        _bounce_json(providers=[dataclasses.asdict(wall_bounce_provider(i)) for i in range(9)]),
        "2 to 8 providers, got 9",
    ),
    (
        "empty model",
        _bounce_json(providers=[{**dataclasses.asdict(p), "model": ""} for p in THREE.providers]),
        "wall_bounce provider model must not be empty",
    ),
    (
        "ftp url",
        _bounce_json(providers=[{**dataclasses.asdict(p), "base_url": "ftp://x"} for p in THREE.providers]),
        "base_url must be an http(s) URL, got 'ftp://x'",
    ),
    (
        "duplicate provider ids",
        _bounce_json(
            providers=[dataclasses.asdict(wall_bounce_provider(i, provider_id="same")) for i in (1, 2)]
        ),
        "distinct provider_ids; repeated: same",
    ),
    (
        "duplicate key envs",
        _bounce_json(
            providers=[dataclasses.asdict(wall_bounce_provider(i, api_key_env="KEY")) for i in (1, 2)]
        ),
        "distinct api_key_envs; repeated: KEY",
    ),
]


@pytest.mark.parametrize(
    ("value", "message"), [(b[1], b[2]) for b in BAD_WALL_BOUNCE], ids=[b[0] for b in BAD_WALL_BOUNCE]
)
def test_bad_wall_bounce_argument(value: str, message: str) -> None:
    with pytest.raises(RunnerArgsError) as caught:
        parse_runner_args(_with_bounce(value))
    assert str(caught.value).startswith("invalid runner arguments: argument --wall-bounce: ")
    assert message in str(caught.value)


def test_wall_bounce_given_twice() -> None:
    with pytest.raises(RunnerArgsError, match="--wall-bounce given more than once"):
        parse_runner_args([*runner_args(settings(wall_bounce=THREE)), "--wall-bounce", THREE.to_json()])


def test_wall_bounce_needs_read_only_and_no_resume_on_the_command_line() -> None:
    args = runner_args(settings(sandbox="isolated"))
    with pytest.raises(RunnerArgsError, match="wall_bounce needs sandbox read-only, got 'isolated'"):
        parse_runner_args([*args, "--wall-bounce", THREE.to_json()])
    args = runner_args(settings(resume_thread_id="thread-1"))
    with pytest.raises(RunnerArgsError, match="wall_bounce cannot resume a thread"):
        parse_runner_args([*args, "--wall-bounce", THREE.to_json()])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: wall_bounce_settings(wall_bounce_provider(1)), "2 to 8 providers, got 1"),
        (lambda: wall_bounce_settings(*(wall_bounce_provider(i) for i in range(9))), "got 9"),
        (
            lambda: wall_bounce_settings(wall_bounce_provider(1), wall_bounce_provider(2, provider_id="p1")),
            "distinct provider_ids; repeated: p1",
        ),
        (
            lambda: wall_bounce_settings(
                wall_bounce_provider(1), wall_bounce_provider(2, api_key_env="P1_API_KEY")
            ),
            "distinct api_key_envs; repeated: P1_API_KEY",
        ),
        (lambda: wall_bounce_provider(1, provider_id=""), "provider_id must not be empty"),
        (lambda: wall_bounce_provider(1, base_url=""), "base_url must not be empty"),
        (lambda: wall_bounce_provider(1, api_key_env=""), "api_key_env must not be empty"),
        (lambda: wall_bounce_provider(1, model=""), "model must not be empty"),
        (lambda: wall_bounce_provider(1, model=None), "model must be a string, got NoneType"),
        (lambda: wall_bounce_provider(1, api_key_env="A\x00B"), "must not contain a NUL"),
        (lambda: wall_bounce_provider(1, base_url="api.example.com"), "must be an http(s) URL"),
        (lambda: wall_bounce_provider(1, provider_id="p" * 65), "provider_id must be at most 64"),
        (lambda: wall_bounce_provider(1, model="m" * 129), "model must be at most 128"),
        (lambda: wall_bounce_settings(min_providers=0), "between 1 and the number of providers (2), got 0"),
        (lambda: wall_bounce_settings(min_providers=3), "got 3"),
        (lambda: wall_bounce_settings(min_providers=True), "min_providers must be an integer, got bool"),
        (lambda: wall_bounce_settings(quality_threshold=-0.01), "between 0 and 1, got -0.01"),
        (lambda: wall_bounce_settings(quality_threshold=1.01), "between 0 and 1, got 1.01"),
        (lambda: wall_bounce_settings(quality_threshold=float("inf")), "between 0 and 1, got inf"),
        (lambda: wall_bounce_settings(quality_threshold="0.5"), "must be a number, got str"),
        (lambda: settings(wall_bounce=THREE, sandbox="isolated"), "needs sandbox read-only, got 'isolated'"),
        (lambda: settings(wall_bounce=THREE, sandbox="full-access"), "needs sandbox read-only"),
        (lambda: settings(wall_bounce=THREE, resume_thread_id="t"), "cannot resume a thread"),
        (lambda: settings(wall_bounce={"providers": []}), "wall_bounce must be WallBounceSettings, got dict"),
        (
            lambda: settings(
                wall_bounce=wall_bounce_settings(
                    wall_bounce_provider(1, model="m" * 100, base_url="http://" + "x" * 70_000),
                    wall_bounce_provider(2, base_url="http://" + "y" * 70_000),
                )
            ),
            f"a command-line argument may be at most {MAX_ARG_BYTES} bytes",
        ),
    ],
)
def test_invalid_wall_bounce_settings_cannot_be_built(build: Any, message: str) -> None:
    with pytest.raises(RunnerArgsError) as caught:
        build()
    assert message in str(caught.value)


def test_wall_bounce_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        THREE.min_providers = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        THREE.providers[0].model = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------- network fence


@pytest.mark.parametrize("seconds", [0.001, 0.5, 10.0, 1 / 3, 300.0])
def test_network_fence_round_trip(seconds: float) -> None:
    t = settings(network_fence_seconds=seconds)
    args = runner_args(t)
    assert args[args.index("--network-fence-seconds") + 1] == repr(seconds)
    assert parse_runner_args(args) == t
    assert "--network-fence-seconds" not in runner_args(settings())


def test_network_fence_from_the_config_value() -> None:
    spec = CodexSessionSpec.model_validate({"prompt": "p"})
    endpoint = ModelEndpointConfig()
    on = turn_settings_for(
        spec, model="m", resume_thread_id=None, endpoint=endpoint, network_fence_seconds=10
    )
    off = turn_settings_for(
        spec, model="m", resume_thread_id=None, endpoint=endpoint, network_fence_seconds=0
    )
    assert on.network_fence_seconds == 10.0 and isinstance(on.network_fence_seconds, float)
    assert off.network_fence_seconds is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ten", "argument --network-fence-seconds: not a number: 'ten'"),
        ("", "argument --network-fence-seconds: not a number"),
        ("0", "network_fence_seconds must be more than 0 and at most 300, got 0.0"),
        ("-1", "must be more than 0"),
        ("301", "must be more than 0 and at most 300"),
        ("nan", "must be more than 0"),
        ("inf", "must be more than 0"),
        ("1e400", "must be more than 0"),
    ],
)
def test_bad_network_fence_argument(value: str, message: str) -> None:
    with pytest.raises(RunnerArgsError) as caught:
        parse_runner_args([*runner_args(settings()), "--network-fence-seconds", value])
    assert message in str(caught.value)


@pytest.mark.parametrize("value", [True, "10", 0, -0.5, float("nan")])
def test_invalid_network_fence_settings_cannot_be_built(value: Any) -> None:
    with pytest.raises(RunnerArgsError, match="network_fence_seconds must be"):
        settings(network_fence_seconds=value)
