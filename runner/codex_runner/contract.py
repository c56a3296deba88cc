"""The runner container's command line: the one contract between the
operator's pod builder (which writes it) and the runner's CLI (which reads it).

Both sides import this module, so the flags cannot drift apart:
``parse_runner_args(runner_args(t)) == t`` for every valid ``t``.

Everything a turn needs travels as arguments, never as a file or a
Kubernetes lookup, because the runner holds no credentials (DESIGN principle
2). The API key is the exception: only the *name* of its environment variable
is an argument; the value comes from a Secret through the pod's env.
"""

from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, NoReturn

from codex_api.common import SANDBOX_LEVELS, SandboxLevel
from codex_api.sandbox import (
    MAX_WALL_BOUNCE_PROVIDERS,
    MIN_WALL_BOUNCE_PROVIDERS,
    profile,
    wall_bounce_levels,
)

if TYPE_CHECKING:
    from codex_api.config import ModelEndpointConfig
    from codex_api.session import CodexSessionSpec

__all__ = [
    "DEFAULT_CODEX_HOME",
    "DEFAULT_WORKSPACE",
    "MAX_ARG_BYTES",
    "MAX_NETWORK_FENCE_SECONDS",
    "MODES",
    "REASONING_EFFORTS",
    "RUNNER_COMMAND",
    "SANDBOXES",
    "VERBOSITIES",
    "WALL_BOUNCE_MAX_PROVIDERS",
    "WALL_BOUNCE_MIN_PROVIDERS",
    "AgentOptions",
    "RunnerArgsError",
    "Sandbox",
    "TurnSettings",
    "WallBounceProvider",
    "WallBounceSettings",
    "agent_args",
    "parse_agent_args",
    "parse_runner_args",
    "runner_args",
    "turn_settings_for",
    "usage",
]

Sandbox = SandboxLevel
SANDBOXES: tuple[str, ...] = SANDBOX_LEVELS
MODES: tuple[str, ...] = ("interactive", "non-interactive", "ci")
REASONING_EFFORTS: tuple[str, ...] = ("minimal", "low", "medium", "high")
VERBOSITIES: tuple[str, ...] = ("low", "medium", "high")

DEFAULT_CODEX_HOME = "/codex/home"
DEFAULT_WORKSPACE = "/workspace"

RUNNER_COMMAND: list[str] = ["codex-runner"]
SUBCOMMAND = "run"

# Linux refuses to exec a program when any single argv string is longer than
# MAX_ARG_STRLEN (32 pages = 131072 bytes, terminating NUL included). A
# prompt past that would give a pod that can never start, so it is refused
# while the settings are built, where the operator can report it.
MAX_ARG_BYTES = 131072 - 1

MAX_NETWORK_FENCE_SECONDS = 300

WALL_BOUNCE_MIN_PROVIDERS = MIN_WALL_BOUNCE_PROVIDERS
WALL_BOUNCE_MAX_PROVIDERS = MAX_WALL_BOUNCE_PROVIDERS


class RunnerArgsError(ValueError):
    """Bad runner settings or a bad runner command line; the message says which flag and why."""


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise RunnerArgsError(f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise RunnerArgsError(f"{name} must not be empty")
    if "\x00" in value:
        raise RunnerArgsError(f"{name} must not contain a NUL character")


@dataclass(frozen=True)
class WallBounceProvider:
    """One provider a wall-bounce turn asks: its endpoint, the env var holding its key, its model."""

    provider_id: str
    base_url: str
    api_key_env: str
    model: str

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_text(f"wall_bounce provider {f.name}", getattr(self, f.name))
        # The result frame's ProviderRun holds provider and model with these bounds.
        for name, most in (("provider_id", 64), ("model", 128)):
            if len(getattr(self, name)) > most:
                raise RunnerArgsError(f"wall_bounce provider {name} must be at most {most} characters")
        if not self.base_url.startswith(("http://", "https://")):
            raise RunnerArgsError(
                f"wall_bounce provider base_url must be an http(s) URL, got {_clip(self.base_url)}"
            )


@dataclass(frozen=True)
class WallBounceSettings:
    """Ask every provider the same prompt (one Codex run each, in order), then compare the answers."""

    providers: tuple[WallBounceProvider, ...]
    min_providers: int
    quality_threshold: float

    def __post_init__(self) -> None:
        if not isinstance(self.providers, (tuple, list)) or not all(
            isinstance(p, WallBounceProvider) for p in self.providers
        ):
            raise RunnerArgsError("wall_bounce providers must be a sequence of WallBounceProvider")
        object.__setattr__(self, "providers", tuple(self.providers))
        count = len(self.providers)
        if not WALL_BOUNCE_MIN_PROVIDERS <= count <= WALL_BOUNCE_MAX_PROVIDERS:
            raise RunnerArgsError(
                f"wall_bounce needs {WALL_BOUNCE_MIN_PROVIDERS} to {WALL_BOUNCE_MAX_PROVIDERS} providers, got {count}"
            )
        for name in ("provider_id", "api_key_env"):
            values = [getattr(p, name) for p in self.providers]
            duplicates = sorted({v for v in values if values.count(v) > 1})
            if duplicates:
                raise RunnerArgsError(
                    f"wall_bounce providers must have distinct {name}s; repeated: {', '.join(duplicates)}"
                )
        if isinstance(self.min_providers, bool) or not isinstance(self.min_providers, int):
            raise RunnerArgsError(
                f"wall_bounce min_providers must be an integer, got {type(self.min_providers).__name__}"
            )
        if not 1 <= self.min_providers <= count:
            raise RunnerArgsError(
                f"wall_bounce min_providers must be between 1 and the number of providers ({count}), "
                f"got {self.min_providers}"
            )
        threshold = self.quality_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise RunnerArgsError(
                f"wall_bounce quality_threshold must be a number, got {type(threshold).__name__}"
            )
        if not (math.isfinite(threshold) and 0 <= threshold <= 1):
            raise RunnerArgsError(f"wall_bounce quality_threshold must be between 0 and 1, got {threshold!r}")
        object.__setattr__(self, "quality_threshold", float(threshold))

    def to_json(self) -> str:
        """The canonical JSON of ``--wall-bounce``."""
        return json.dumps(
            {
                "providers": [{f.name: getattr(p, f.name) for f in fields(p)} for p in self.providers],
                "min_providers": self.min_providers,
                "quality_threshold": self.quality_threshold,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> WallBounceSettings:
        """The inverse of :meth:`to_json`; exactly its keys, with their types."""
        try:
            raw = json.loads(text)
        except ValueError as err:
            raise RunnerArgsError(f"not valid JSON ({err})") from None
        _check_keys("the value", raw, ("providers", "min_providers", "quality_threshold"))
        providers = raw["providers"]
        if not isinstance(providers, list):
            raise RunnerArgsError(f"providers must be a list, got {_json_type(providers)}")
        parsed = []
        for i, item in enumerate(providers):
            where = f"providers[{i}]"
            _check_keys(where, item, tuple(f.name for f in fields(WallBounceProvider)))
            for key, value in item.items():
                if not isinstance(value, str):
                    raise RunnerArgsError(f"{where}.{key} must be a string, got {_json_type(value)}")
            parsed.append(WallBounceProvider(**item))
        min_providers = raw["min_providers"]
        if isinstance(min_providers, bool) or not isinstance(min_providers, int):
            raise RunnerArgsError(f"min_providers must be an integer, got {_json_type(min_providers)}")
        threshold = raw["quality_threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise RunnerArgsError(f"quality_threshold must be a number, got {_json_type(threshold)}")
        return cls(providers=tuple(parsed), min_providers=min_providers, quality_threshold=threshold)


def _json_type(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _check_keys(where: str, value: object, keys: tuple[str, ...]) -> None:
    if not isinstance(value, dict):
        raise RunnerArgsError(f"{where} must be a JSON object, got {_json_type(value)}")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise RunnerArgsError(f"{where} has unknown keys: {', '.join(map(_clip, unknown))}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise RunnerArgsError(f"{where} is missing keys: {', '.join(missing)}")


@dataclass(frozen=True)
class TurnSettings:
    """Everything the runner needs to run one Codex turn."""

    prompt: str
    model: str
    sandbox: Sandbox
    mode: str
    full_auto: bool
    reasoning_effort: str | None
    verbosity: str | None
    base_instructions: str | None
    response_language: str | None
    resume_thread_id: str | None
    provider_id: str
    base_url: str
    api_key_env: str
    codex_home: str = DEFAULT_CODEX_HOME
    workspace: str = DEFAULT_WORKSPACE
    # Several providers, one run each, compared (the provider fields above are then not used).
    wall_bounce: WallBounceSettings | None = None
    # Wait at most this long for the pod's NetworkPolicy to be in force before Codex starts (None: do not wait).
    network_fence_seconds: float | None = None

    # Validating here, not only in the parser, makes the round trip hold for
    # every TurnSettings that can exist: runner_args never writes a command
    # line that parse_runner_args would refuse.
    def __post_init__(self) -> None:
        _check_choice("sandbox", self.sandbox, SANDBOXES)
        _check_choice("mode", self.mode, MODES)
        if self.reasoning_effort is not None:
            _check_choice("reasoning_effort", self.reasoning_effort, REASONING_EFFORTS)
        if self.verbosity is not None:
            _check_choice("verbosity", self.verbosity, VERBOSITIES)
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, str):
                continue
            # execve() ends every argument at the first NUL byte.
            if "\x00" in value:
                raise RunnerArgsError(f"{f.name} must not contain a NUL character")
            if len(value.encode("utf-8", "surrogatepass")) > MAX_ARG_BYTES:
                raise RunnerArgsError(
                    f"{f.name} is {len(value.encode('utf-8', 'surrogatepass'))} bytes in UTF-8; "
                    f"a command-line argument may be at most {MAX_ARG_BYTES} bytes"
                )
        for name in ("prompt", "model", "provider_id", "base_url", "api_key_env"):
            if not getattr(self, name):
                raise RunnerArgsError(f"{name} must not be empty")
        for name in ("codex_home", "workspace"):
            path = getattr(self, name)
            if not path.startswith("/") or posixpath.normpath(path) != path:
                raise RunnerArgsError(f"{name} must be a normalized absolute path, got {path!r}")
        # Codex's home holds the rollout files and its config; inside the
        # workspace the model could read or rewrite them, and a read-only
        # workspace mount would make them unwritable.
        home, work = self.codex_home.rstrip("/") + "/", self.workspace.rstrip("/") + "/"
        if home.startswith(work) or work.startswith(home):
            raise RunnerArgsError(
                f"codex_home ({self.codex_home!r}) and workspace ({self.workspace!r}) must not contain each other"
            )
        if self.wall_bounce is not None:
            self._check_wall_bounce(self.wall_bounce)
        fence = self.network_fence_seconds
        if fence is not None:
            if isinstance(fence, bool) or not isinstance(fence, (int, float)):
                raise RunnerArgsError(f"network_fence_seconds must be a number, got {type(fence).__name__}")
            if not (math.isfinite(fence) and 0 < fence <= MAX_NETWORK_FENCE_SECONDS):
                raise RunnerArgsError(
                    f"network_fence_seconds must be more than 0 and at most {MAX_NETWORK_FENCE_SECONDS}, got {fence!r}"
                )
            object.__setattr__(self, "network_fence_seconds", float(fence))

    def _check_wall_bounce(self, wall_bounce: WallBounceSettings) -> None:
        if not isinstance(wall_bounce, WallBounceSettings):
            raise RunnerArgsError(f"wall_bounce must be WallBounceSettings, got {type(wall_bounce).__name__}")
        # Every provider would write the same workspace, one after the other.
        if not profile(self.sandbox).wall_bounce:
            raise RunnerArgsError(
                f"wall_bounce needs sandbox {' or '.join(wall_bounce_levels())}, got {self.sandbox!r}"
            )
        # Each provider starts a thread of its own; there is no one thread to resume.
        if self.resume_thread_id is not None:
            raise RunnerArgsError("wall_bounce cannot resume a thread (resume_thread_id must not be set)")
        size = len(wall_bounce.to_json().encode("utf-8", "surrogatepass"))
        if size > MAX_ARG_BYTES:
            raise RunnerArgsError(
                f"wall_bounce is {size} bytes as JSON; a command-line argument may be at most {MAX_ARG_BYTES} bytes"
            )


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise RunnerArgsError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


# (flag, TurnSettings field) for every flag that takes a value, in the order
# runner_args writes them. Long free text goes last so `kubectl describe pod`
# shows the short settings first.
_VALUE_FLAGS: tuple[tuple[str, str], ...] = (
    ("--model", "model"),
    ("--sandbox", "sandbox"),
    ("--mode", "mode"),
    ("--reasoning-effort", "reasoning_effort"),
    ("--verbosity", "verbosity"),
    ("--response-language", "response_language"),
    ("--resume-thread-id", "resume_thread_id"),
    ("--provider-id", "provider_id"),
    ("--base-url", "base_url"),
    ("--api-key-env", "api_key_env"),
    ("--codex-home", "codex_home"),
    ("--workspace", "workspace"),
    ("--network-fence-seconds", "network_fence_seconds"),
    ("--wall-bounce", "wall_bounce"),
    ("--base-instructions", "base_instructions"),
    ("--prompt", "prompt"),
)
_FULL_AUTO = "--full-auto"
_FLAG_OF = dict(_VALUE_FLAGS)


def runner_args(t: TurnSettings) -> list[str]:
    """The runner container's args (after RUNNER_COMMAND): only the options that are set."""
    args = [SUBCOMMAND]
    for flag, name in _VALUE_FLAGS:
        value = getattr(t, name)
        if value is None:
            continue
        if isinstance(value, WallBounceSettings):
            value = value.to_json()
        elif isinstance(value, float):
            value = repr(value)  # exact: float(repr(x)) == x
        args += [flag, value]
        if flag == "--mode" and t.full_auto:
            args.append(_FULL_AUTO)
    return args


_REQUIRED: tuple[str, ...] = (
    "--model",
    "--sandbox",
    "--mode",
    "--provider-id",
    "--base-url",
    "--api-key-env",
    "--prompt",
)
_CHOICES: dict[str, tuple[str, ...]] = {
    "--sandbox": SANDBOXES,
    "--mode": MODES,
    "--reasoning-effort": REASONING_EFFORTS,
    "--verbosity": VERBOSITIES,
}
_META: dict[str, str] = {"--wall-bounce": "JSON", "--network-fence-seconds": "SECONDS"}


def usage() -> str:
    """A one-paragraph synopsis of the command line, for the runner's --help and error output."""
    parts = [*RUNNER_COMMAND, SUBCOMMAND]
    for flag, name in _VALUE_FLAGS:
        choice = _CHOICES.get(flag)
        meta = "{" + ",".join(choice) + "}" if choice else _META.get(flag, name.upper())
        parts.append(f"{flag} {meta}" if flag in _REQUIRED else f"[{flag} {meta}]")
        if flag == "--mode":
            parts.append(f"[{_FULL_AUTO}]")
    return (
        "usage: "
        + " ".join(parts)
        + "\n  --wall-bounce JSON: "
        + '{"min_providers":N,"providers":[{"api_key_env":..,"base_url":..,"model":..,"provider_id":..},...],'
        + '"quality_threshold":0..1} '
        + f"({WALL_BOUNCE_MIN_PROVIDERS}-{WALL_BOUNCE_MAX_PROVIDERS} providers, "
        + f"sandbox {' or '.join(wall_bounce_levels())}, no resume)"
    )


def _clip(word: str) -> str:
    # A misplaced prompt can be 100 KiB; an error message quotes its start.
    return repr(word) if len(word) <= 60 else repr(word[:57]) + "..."


def _fail(message: str) -> NoReturn:
    raise RunnerArgsError(f"invalid runner arguments: {message}")


# Hand-written rather than argparse: argparse guesses whether a word that
# starts with "-" is an option or a value (so a prompt such as "--help me" or
# "-1" is misread) and silently drops a value that is exactly "--". Here a
# value is always exactly the next word, whatever it looks like, which is
# what makes this the exact inverse of runner_args.
def parse_runner_args(argv: Sequence[str]) -> TurnSettings:
    """The inverse of :func:`runner_args`; raises :class:`RunnerArgsError` (a ValueError) on bad input.

    Accepts ``--flag VALUE`` and ``--flag=VALUE``; no abbreviations, no
    repeated options, no positional words after the subcommand.
    """
    if isinstance(argv, str):
        _fail("expected a list of words, got a string")
    words = list(argv)
    if not words or words[0] != SUBCOMMAND:
        _fail(f"expected the subcommand {SUBCOMMAND!r}, got {_clip(words[0]) if words else 'nothing'}")
    values: dict[str, str] = {}
    full_auto = False
    i = 1
    while i < len(words):
        word = words[i]
        i += 1
        flag, eq, inline = word.partition("=") if word.startswith("--") else (word, "", "")
        if flag == _FULL_AUTO:
            if eq:
                _fail(f"argument {_FULL_AUTO}: takes no value, got {inline!r}")
            if full_auto:
                _fail(f"{_FULL_AUTO} given more than once")
            full_auto = True
            continue
        if flag not in _FLAG_OF:
            kind = "option" if word.startswith("-") else "argument"
            _fail(f"unrecognized {kind}: {_clip(word)}")
        if flag in values:
            _fail(f"{flag} given more than once")
        if eq:
            value = inline
        elif i < len(words):
            value = words[i]
            i += 1
        else:
            _fail(f"argument {flag}: expected one value")
        choices = _CHOICES.get(flag)
        if choices is not None and value not in choices:
            _fail(f"argument {flag}: invalid choice {value!r} (choose from {', '.join(choices)})")
        values[flag] = value
    missing = [flag for flag in _REQUIRED if flag not in values]
    if missing:
        _fail(f"the following arguments are required: {', '.join(missing)}")
    # Absent optional flags are None, except the two paths with defaults.
    kwargs: dict[str, Any] = {name: None for flag, name in _VALUE_FLAGS if flag not in _REQUIRED}
    kwargs.update(codex_home=DEFAULT_CODEX_HOME, workspace=DEFAULT_WORKSPACE)
    kwargs.update({_FLAG_OF[flag]: value for flag, value in values.items()})
    if "--network-fence-seconds" in values:
        raw = values["--network-fence-seconds"]
        try:
            kwargs["network_fence_seconds"] = float(raw)
        except ValueError:
            _fail(f"argument --network-fence-seconds: not a number: {_clip(raw)}")
    if "--wall-bounce" in values:
        try:
            kwargs["wall_bounce"] = WallBounceSettings.from_json(values["--wall-bounce"])
        except RunnerArgsError as err:
            _fail(f"argument --wall-bounce: {err}")
    return TurnSettings(full_auto=full_auto, **kwargs)


# --------------------------------------------------------------------------- the agent
AGENT_SUBCOMMAND = "agent"
# A live pod's agent takes each turn's prompt from the operator; its command
# line carries the rest of the settings, which every turn it serves shares.
AGENT_PROMPT = "(each turn's prompt comes from the operator)"
MAX_IDLE_SECONDS = 86400
# Set in a live pod's env: the operator's public key (PEM) and, from the
# downward API, the pod's UID, which every signed request must name.
ENV_PUBLIC_KEY = "CODEX_AGENT_PUBLIC_KEY"
ENV_POD_UID = "CODEX_POD_UID"


@dataclass(frozen=True)
class AgentOptions:
    """What only the agent needs: where it listens, how long it waits for a turn,
    and the file its turns' credentials go to (None: the key is in the env)."""

    port: int
    idle_seconds: int
    credential_file: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise RunnerArgsError(f"port must be 1..65535, got {self.port!r}")
        idle = self.idle_seconds
        if isinstance(idle, bool) or not isinstance(idle, int) or not 1 <= idle <= MAX_IDLE_SECONDS:
            raise RunnerArgsError(f"idle_seconds must be 1..{MAX_IDLE_SECONDS}, got {idle!r}")
        path = self.credential_file
        if path is not None and (not path.startswith("/") or posixpath.normpath(path) != path):
            raise RunnerArgsError(f"credential_file must be a normalized absolute path, got {path!r}")


_AGENT_FLAGS = ("--port", "--idle-seconds", "--credential-file")


def agent_args(t: TurnSettings, options: AgentOptions) -> list[str]:
    """A live pod's container args: the agent's options, then the turn settings every
    turn shares (no prompt, no thread: each order brings its own)."""
    if t.wall_bounce is not None:
        raise RunnerArgsError("a wall-bounce turn runs in a pod of its own, not in a live pod")
    run = runner_args(replace(t, prompt=AGENT_PROMPT, resume_thread_id=None))
    at = run.index("--prompt")
    shared = run[1:at] + run[at + 2 :]
    own = ["--port", str(options.port), "--idle-seconds", str(options.idle_seconds)]
    if options.credential_file is not None:
        own += ["--credential-file", options.credential_file]
    return [AGENT_SUBCOMMAND, *own, *shared]


def parse_agent_args(argv: Sequence[str]) -> tuple[TurnSettings, AgentOptions]:
    """The inverse of :func:`agent_args`; raises :class:`RunnerArgsError`."""
    if isinstance(argv, str):
        _fail("expected a list of words, got a string")
    words = list(argv)
    if not words or words[0] != AGENT_SUBCOMMAND:
        _fail(f"expected the subcommand {AGENT_SUBCOMMAND!r}, got {_clip(words[0]) if words else 'nothing'}")
    own: dict[str, str] = {}
    rest: list[str] = []
    i = 1
    while i < len(words):
        flag, eq, inline = words[i].partition("=")
        if flag in _AGENT_FLAGS:
            if flag in own:
                _fail(f"{flag} given more than once")
            if eq:
                own[flag], i = inline, i + 1
            elif i + 1 < len(words):
                own[flag], i = words[i + 1], i + 2
            else:
                _fail(f"argument {flag}: expected one value")
            continue
        if flag in ("--prompt", "--resume-thread-id", "--wall-bounce"):
            _fail(f"{flag} is not an agent option: each turn's order brings it")
        rest.append(words[i])
        # A value is always the next word, whatever it looks like.
        if flag in _FLAG_OF and not eq and i + 1 < len(words):
            rest.append(words[i + 1])
            i += 1
        i += 1
    for flag in ("--port", "--idle-seconds"):
        if flag not in own:
            _fail(f"the following arguments are required: {flag}")
    try:
        options = AgentOptions(
            port=int(own["--port"]),
            idle_seconds=int(own["--idle-seconds"]),
            credential_file=own.get("--credential-file"),
        )
    except ValueError as err:
        _fail(str(err) if isinstance(err, RunnerArgsError) else f"not a number: {err}")
    settings = parse_runner_args([SUBCOMMAND, *rest, "--prompt", AGENT_PROMPT])
    return settings, options


def turn_settings_for(
    spec: CodexSessionSpec,
    *,
    model: str,
    resume_thread_id: str | None,
    endpoint: ModelEndpointConfig,
    wall_bounce: WallBounceSettings | None = None,
    network_fence_seconds: float = 0,
) -> TurnSettings:
    """The settings of one turn of ``spec``; ``model`` is already resolved against the config default."""
    return TurnSettings(
        prompt=spec.prompt,
        model=model,
        sandbox=spec.sandbox,
        mode=spec.mode,
        full_auto=spec.full_auto,
        reasoning_effort=spec.reasoning_effort,
        verbosity=spec.verbosity,
        base_instructions=spec.base_instructions,
        response_language=spec.response_language,
        resume_thread_id=resume_thread_id,
        provider_id=endpoint.provider_id,
        base_url=endpoint.base_url,
        api_key_env=endpoint.api_key_env,
        wall_bounce=wall_bounce,
        network_fence_seconds=network_fence_seconds or None,
    )
