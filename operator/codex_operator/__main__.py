"""The ``codex-operator`` script and ``python -m codex_operator``."""

from __future__ import annotations

import sys

from codex_api import lazy_client


def main() -> int:
    # kopf imports the synchronous `kubernetes` client and pykube when they are
    # installed, only to recognise their model objects, which this operator
    # never hands it (it works on raw dicts through kubernetes_asyncio). The
    # synchronous client is installed beside it (the kubectl plugin uses it)
    # and costs 20 MiB of resident memory in every replica (docs/benchmarks.md,
    # P5). A None entry makes those imports fail, so kopf takes its fallback.
    for unused in ("kubernetes", "pykube"):
        sys.modules.setdefault(unused, None)  # type: ignore[arg-type]
    # And of kubernetes_asyncio only what is used is loaded (codex_api.lazy_client).
    lazy_client.install()
    from codex_operator.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
