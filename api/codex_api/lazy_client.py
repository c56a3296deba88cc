"""kubernetes_asyncio, loaded as it is used.

The client's package `__init__` files import every API class (138 modules)
and every model (700+) up front: 36 MiB of resident memory in each process
that imports it, and this project uses three APIs on raw dicts and no model.
The operator and the gateway are long-lived and replicated, and their memory
targets (docs/benchmarks.md, P5) do not hold with that floor.

`install()` puts lazy stand-ins for those packages into `sys.modules`: each
is a real package (same `__path__`, so its submodules import as usual) whose
names (`client.CoreV1Api`, `client.models.V1ObjectMeta`, `client`,
`config`, ...) resolve on first use, from the same `from X import Y` lines
its `__init__` has, read with `ast`. Nothing of the library is copied or
changed: the first use of a name imports exactly the module the eager
`__init__` would have imported it from. A package whose `__init__` does
anything else than imports and constant assignments is left eager (a
future version that does is still correct, only bigger);
tests/unit/test_lazy_client.py checks that every name resolves to the very
object the eager import gives.

Called first by the `codex-operator` and `codex-gateway` entry points,
before anything imports the client; a process that imported it already is
left as it is.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

ROOT = "kubernetes_asyncio"
PACKAGES = (ROOT, f"{ROOT}.client", f"{ROOT}.client.api", f"{ROOT}.client.models")


class LazyPackage(types.ModuleType):
    """A package whose names are imported on first access."""

    _lazy_names: dict[str, tuple[str, str | None]]

    def __getattr__(self, name: str) -> Any:
        target = self.__dict__.get("_lazy_names", {}).get(name)
        if target is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        module_name, attribute = target
        module = importlib.import_module(module_name)
        value = module if attribute is None else getattr(module, attribute)
        setattr(self, name, value)
        return value

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._lazy_names))


def exports(source: str) -> tuple[dict[str, tuple[str, str | None]], dict[str, Any]] | None:
    """(lazy names, constants) of a package `__init__` made only of imports and
    constant assignments; None when it does anything else."""
    names: dict[str, tuple[str, str | None]] = {}
    constants: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                if alias.name == "*":
                    return None
                names[alias.asname or alias.name] = (node.module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname is None:
                    return None  # binds the top package: not a name of this one
                names[alias.asname] = (alias.name, None)
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            for target in node.targets:
                assert isinstance(target, ast.Name)
                constants[target.id] = value
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring
        else:
            return None
    return names, constants


def install() -> bool:
    """Put the lazy packages in place; False (and nothing changed) when the client
    is imported already, not installed, or not of the expected shape."""
    if any(name in sys.modules for name in PACKAGES):
        return False
    spec = importlib.util.find_spec(ROOT)
    if spec is None or spec.origin is None:
        return False
    base = Path(spec.origin).parent
    prepared: list[LazyPackage] = []
    for package in PACKAGES:
        directory = base.joinpath(*package.split(".")[1:])
        init = directory / "__init__.py"
        parsed = exports(init.read_text(encoding="utf-8")) if init.is_file() else None
        if parsed is None:
            return False
        names, constants = parsed
        module = LazyPackage(package)
        module.__dict__.update(constants)
        module._lazy_names = names
        module.__file__ = str(init)
        module.__path__ = [str(directory)]
        module.__package__ = package
        module.__spec__ = importlib.util.spec_from_file_location(
            package, init, submodule_search_locations=[str(directory)]
        )
        prepared.append(module)
    for module in prepared:
        sys.modules[module.__name__] = module
        parent, _, child = module.__name__.rpartition(".")
        if parent:
            # What importing the subpackage would have set on its parent.
            setattr(sys.modules[parent], child, module)
    return True
