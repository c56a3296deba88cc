"""codex_api.lazy_client: the same names, the same objects, less memory.

Each side runs in a fresh interpreter: the eager import (what the library's
own `__init__` files give) and the lazy one (what the operator's and the
gateway's entry points install)."""

from __future__ import annotations

import json
import subprocess
import sys

from codex_api.lazy_client import exports

RESOLVE = r"""
import json, sys
lazy = sys.argv[1] == "lazy"
if lazy:
    from codex_api import lazy_client
    assert lazy_client.install()
rss = lambda: int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
import kubernetes_asyncio
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client import api, models
after_import = rss()
import types
def ident(obj):
    if isinstance(obj, types.ModuleType):
        return f"module:{obj.__name__}"
    return f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', getattr(obj, '__name__', repr(obj)))}"
names = {}
for package in (kubernetes_asyncio, client, api, models):
    for name in dir(package):
        if not name.startswith("_"):
            names[f"{package.__name__}.{name}"] = ident(getattr(package, name))
print(json.dumps({"names": names, "rss_after_import": after_import}))
"""


def _run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", RESOLVE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_every_name_resolves_to_the_object_the_eager_import_gives() -> None:
    eager, lazy = _run("eager"), _run("lazy")
    assert len(eager["names"]) > 800  # every API class and model, not a handful
    missing = set(eager["names"]) - set(lazy["names"])
    assert missing == set()
    assert {k: v for k, v in lazy["names"].items() if eager["names"].get(k, v) != v} == {}
    # The point of it: importing the client costs far less until names are used.
    assert lazy["rss_after_import"] < eager["rss_after_import"] - 20


def test_an_init_that_does_more_than_import_stays_eager() -> None:
    assert exports("from a.b import C\nimport a.d as d\n__version__ = '1'\n") == (
        {"C": ("a.b", "C"), "d": ("a.d", None)},
        {"__version__": "1"},
    )
    assert exports("from a import *\n") is None
    assert exports("import a.b\n") is None
    assert exports("if True:\n    from a import b\n") is None
    assert exports("X = make()\n") is None


def test_install_leaves_an_already_imported_client_alone() -> None:
    code = "import kubernetes_asyncio.client\nfrom codex_api import lazy_client\nprint(lazy_client.install())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
