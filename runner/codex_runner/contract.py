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

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, NoReturn, get_args

if TYPE_CHECKING:
    from codex_api.config import ModelEndpointConfig
    from codex_api.session import CodexSessionSpec

__all__ = [
    "DEFAULT_CODEX_HOME",
    "DEFAULT_WORKSPACE",
    "MAX_ARG_BYTES",
    "MODES",
    "REASONING_EFFORTS",
    "RUNNER_COMMAND",
    "SANDBOXES",
    "VERBOSITIES",
    "RunnerArgsError",
    "Sandbox",
    "TurnSettings",
    "parse_runner_args",
    "runner_args",
    "turn_settings_for",
    "usage",
]

Sandbox = Literal["read-only", "isolated", "full-access"]
SANDBOXES: tuple[str, ...] = get_args(Sandbox)
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


class RunnerArgsError(ValueError):
    """Bad runner settings or a bad runner command line; the message says which flag and why."""


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


def usage() -> str:
    """A one-paragraph synopsis of the command line, for the runner's --help and error output."""
    parts = [*RUNNER_COMMAND, SUBCOMMAND]
    for flag, name in _VALUE_FLAGS:
        choice = _CHOICES.get(flag)
        meta = "{" + ",".join(choice) + "}" if choice else name.upper()
        parts.append(f"{flag} {meta}" if flag in _REQUIRED else f"[{flag} {meta}]")
        if flag == "--mode":
            parts.append(f"[{_FULL_AUTO}]")
    return "usage: " + " ".join(parts)


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
    return TurnSettings(full_auto=full_auto, **kwargs)


def turn_settings_for(
    spec: CodexSessionSpec,
    *,
    model: str,
    resume_thread_id: str | None,
    endpoint: ModelEndpointConfig,
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
    )
