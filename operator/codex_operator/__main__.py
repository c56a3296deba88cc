"""``python -m codex_operator``: the same as the ``codex-operator`` script."""

from codex_operator.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
