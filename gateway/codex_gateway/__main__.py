"""The ``codex-gateway`` script and ``python -m codex_gateway``."""

from __future__ import annotations

from codex_api import lazy_client


def main() -> int:
    # Before anything imports the Kubernetes client: only what is used is loaded
    # (codex_api.lazy_client; 32 MiB less per replica).
    lazy_client.install()
    from codex_gateway.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
