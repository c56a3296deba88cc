"""The ``codex-model-proxy`` script and ``python -m codex_proxy``."""

from __future__ import annotations

from codex_api import lazy_client


def main() -> int:
    lazy_client.install()  # before anything imports the Kubernetes client
    from codex_proxy.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
