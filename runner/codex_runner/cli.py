"""`codex-runner run ...`: the runner pod's entrypoint; `codex-runner agent ...`:
a live pod's (codex_runner.agent_main)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from codex_api.result import EXIT_CONFIG_ERROR, EXIT_INTERNAL, RunnerResult

from .contract import AGENT_SUBCOMMAND, RunnerArgsError, parse_runner_args, usage
from .runner import run_turn


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [AGENT_SUBCOMMAND]:
        from .agent_main import main as agent_main

        return agent_main(args)
    if args in (["-h"], ["--help"], []):
        print(usage())
        return 0 if args else EXIT_CONFIG_ERROR
    try:
        settings = parse_runner_args(args)
    except RunnerArgsError as err:
        print(RunnerResult(outcome="config_error", exit_code=EXIT_CONFIG_ERROR, errors=[str(err)]).frame())
        print(f"codex-runner: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        return run_turn(settings)
    except Exception as err:  # whatever happened, the operator gets a frame to read
        print(
            RunnerResult(outcome="internal_error", exit_code=EXIT_INTERNAL, errors=[repr(err)[:500]]).frame()
        )
        raise


if __name__ == "__main__":
    sys.exit(main())
