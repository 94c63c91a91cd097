"""longmem-etl: move, back up and analyse Longmem memories.

The public Python face is one function per CLI verb (see ``docs/python-api.md``)::

    import longmem_etl

    result = longmem_etl.convert("acme.json", "snapshots/")
    print(result.render())  # what `longmem-etl convert` prints; result.to_json() is its --json
    con = longmem_etl.connect("snapshots/")

They are resolved on first use (``import longmem_etl`` loads neither DuckDB nor pyarrow, so
``longmem-etl --help`` stays fast). ``backup`` and ``migrate`` share their names with the submodules
that implement them; the package attribute is always the function (import the modules by their
full name, ``from longmem_etl.backup import backup_from``).
"""

import importlib as _importlib
import sys as _sys
import types as _types

__version__ = "0.1.0"

_EXPORTS = {
    "convert": "longmem_etl.public",
    "backup": "longmem_etl.public",
    "clean": "longmem_etl.public",
    "migrate": "longmem_etl.public",
    "verify": "longmem_etl.public",
    "diff": "longmem_etl.public",
    "connect": "longmem_etl.public",
    "restore": "longmem_etl.public",
    "forget": "longmem_etl.public",
    "publish": "longmem_etl.public",
    "BadInput": "longmem_etl.errors",
    "Incomplete": "longmem_etl.errors",
    "LongmemETLError": "longmem_etl.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


class _Export:
    """A lazily imported export that a same-named submodule cannot shadow.

    Importing ``longmem_etl.backup`` makes the import system ``setattr`` the module onto this
    package, which would replace the ``backup`` function; as a data descriptor on the package's
    class this export wins, and such module assignments are ignored (the module stays in
    ``sys.modules``)."""

    def __init__(self, name: str, module: str) -> None:
        self.name, self.module = name, module

    def __get__(self, obj: object, owner: type | None = None) -> object:
        return getattr(_importlib.import_module(self.module), self.name)

    def __set__(self, obj: object, value: object) -> None:
        if not isinstance(value, _types.ModuleType):
            raise AttributeError(f"longmem_etl.{self.name} is read-only")


class _Package(_types.ModuleType):
    """This package's class, so the exports can be data descriptors."""


for _name, _module in _EXPORTS.items():
    setattr(_Package, _name, _Export(_name, _module))
_sys.modules[__name__].__class__ = _Package
del _name, _module


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
