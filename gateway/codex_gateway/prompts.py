"""MCP prompts: jinja2 templates (``templates/*.j2``) rendered into one user message.

The templates see their arguments and nothing else: a sandboxed environment
with no globals, StrictUndefined (a typo in a template is an error, not an
empty string) and no autoescaping (the output is Markdown, not HTML). Code is
put in a backtick fence longer than any backtick run inside it, so the code
cannot close the fence and smuggle text outside it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from mcp.server import MCPServer
from mcp.server.mcpserver.context import Context
from mcp.server.mcpserver.prompts.base import Message, Prompt, UserMessage
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import INVALID_PARAMS
from pydantic import Field

TEMPLATES = Path(__file__).parent / "templates"
MAX_CODE_BYTES = 64 * 1024
MAX_TEXT_BYTES = 1024
_BACKTICKS = re.compile(r"`+")
_INFO_STRING = re.compile(r"^[A-Za-z0-9_+#.\-]{1,64}$")


class PromptArgumentError(ValueError):
    """A prompt argument that is missing, empty, oversized or malformed."""


@dataclass(frozen=True)
class PromptArg:
    name: str
    description: str
    max_bytes: int
    single_line: bool = False


@dataclass(frozen=True)
class PromptSpec:
    name: str
    title: str
    description: str
    arguments: tuple[PromptArg, ...]

    @property
    def template(self) -> str:
        return f"{self.name}.j2"


_CODE = PromptArg("code", f"The source code (at most {MAX_CODE_BYTES // 1024} KiB).", MAX_CODE_BYTES)

PROMPTS: dict[str, PromptSpec] = {
    p.name: p
    for p in (
        PromptSpec(
            "code-review",
            "Code review",
            "Review code for bugs, security, performance and style.",
            (
                _CODE,
                PromptArg("language", "The programming language, e.g. python.", MAX_TEXT_BYTES, True),
            ),
        ),
        PromptSpec(
            "debug-helper",
            "Debug helper",
            "Find the root cause of an error in code and propose a fix.",
            (_CODE, PromptArg("error_message", "The error or traceback the code produces.", MAX_TEXT_BYTES)),
        ),
        PromptSpec(
            "refactor-code",
            "Refactor code",
            "Refactor code towards a goal, e.g. performance optimization.",
            (_CODE, PromptArg("goal", "What the refactoring should achieve.", MAX_TEXT_BYTES)),
        ),
    )
}


def _described(prompt: str, arg: str) -> str:
    return next(a.description for a in PROMPTS[prompt].arguments if a.name == arg)


Code = Annotated[str, Field(description=_CODE.description)]
Language = Annotated[str, Field(description=_described("code-review", "language"))]
ErrorMessage = Annotated[str, Field(description=_described("debug-helper", "error_message"))]
Goal = Annotated[str, Field(description=_described("refactor-code", "goal"))]


def _environment() -> jinja2.Environment:
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        auto_reload=False,
    )
    env.globals.clear()  # no range, dict, lipsum, ...: the arguments only
    return env


_ENV = _environment()


def fence_for(text: str) -> str:
    """A backtick fence longer than any backtick run in `text` (at least 3)."""
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    return "`" * max(3, longest + 1)


def check_arguments(spec: PromptSpec, arguments: Mapping[str, object] | None) -> dict[str, str]:
    """The arguments of `spec`, checked: all present, strings, non-blank, bounded."""
    given = dict(arguments or {})
    unknown = sorted(set(given) - {a.name for a in spec.arguments})
    if unknown:
        raise PromptArgumentError(f"prompt {spec.name!r}: unknown argument(s) {', '.join(unknown)}")
    checked: dict[str, str] = {}
    for arg in spec.arguments:
        value = given.get(arg.name)
        if value is None:
            raise PromptArgumentError(f"prompt {spec.name!r}: missing required argument {arg.name!r}")
        if not isinstance(value, str):
            raise PromptArgumentError(f"prompt {spec.name!r}: argument {arg.name!r} must be a string")
        if not value.strip():
            raise PromptArgumentError(f"prompt {spec.name!r}: argument {arg.name!r} is empty")
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > arg.max_bytes:
            raise PromptArgumentError(
                f"prompt {spec.name!r}: argument {arg.name!r} is {size} bytes, more than the "
                f"maximum of {arg.max_bytes}"
            )
        if arg.single_line and ("\n" in value or "\r" in value):
            raise PromptArgumentError(f"prompt {spec.name!r}: argument {arg.name!r} must be a single line")
        checked[arg.name] = value
    return checked


def render_prompt(name: str, arguments: Mapping[str, object] | None) -> str:
    """The text of prompt `name` for `arguments`; PromptArgumentError when they do not fit."""
    spec = PROMPTS.get(name)
    if spec is None:
        raise PromptArgumentError(f"unknown prompt {name!r}; known: {', '.join(sorted(PROMPTS))}")
    args = check_arguments(spec, arguments)
    code = args["code"].rstrip("\n")
    language = args.get("language", "").strip()
    variables: dict[str, str] = {
        **args,
        "code": code,
        "fence": fence_for(code),
        # The fence's info string only when it is a plain language tag.
        "info": language if _INFO_STRING.fullmatch(language) else "",
    }
    if "error_message" in args:
        variables["error_message"] = args["error_message"].rstrip("\n")
        variables["error_fence"] = fence_for(variables["error_message"])
    return _ENV.get_template(spec.template).render(variables)


def _invalid(err: PromptArgumentError) -> MCPError:
    return MCPError(code=INVALID_PARAMS, message=str(err))


class _TemplatePrompt(Prompt):
    """Checks the arguments before the SDK does, so that a missing or bad
    argument is an invalid-params error with a message, not an internal error."""

    async def render(self, arguments: dict[str, Any] | None, context: Context[Any, Any]) -> Any:
        try:
            check_arguments(PROMPTS[self.name], arguments)
        except PromptArgumentError as err:
            raise _invalid(err) from None
        return await super().render(arguments, context)


def _messages(name: str, arguments: dict[str, object]) -> list[Message]:
    try:
        text = render_prompt(name, arguments)
    except PromptArgumentError as err:
        raise _invalid(err) from None
    return [UserMessage(text)]


def register_prompts(mcp: MCPServer) -> None:
    """Add the prompts to `mcp`. The MCP argument list comes from the
    signatures; the checks (and their messages) from `check_arguments`."""

    def code_review(code: Code, language: Language) -> list[Message]:
        return _messages("code-review", {"code": code, "language": language})

    def debug_helper(code: Code, error_message: ErrorMessage) -> list[Message]:
        return _messages("debug-helper", {"code": code, "error_message": error_message})

    def refactor_code(code: Code, goal: Goal) -> list[Message]:
        return _messages("refactor-code", {"code": code, "goal": goal})

    for name, fn in (
        ("code-review", code_review),
        ("debug-helper", debug_helper),
        ("refactor-code", refactor_code),
    ):
        spec = PROMPTS[name]
        mcp.add_prompt(
            _TemplatePrompt.from_function(fn, name=name, title=spec.title, description=spec.description)
        )
