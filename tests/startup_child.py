"""Run ``longmem-etl`` in a child process and record, for start-up tests and
``benchmarks/bench_startup.py``, what it had imported and when its first call went out.

    python tests/startup_child.py OUT.json migrate --source ... --target ...

Nothing in ``longmem_etl`` knows about it: a finder on ``sys.meta_path`` wraps
``migrate.uploader.make_sender`` as that module is loaded (before the engine imports the name),
so the first call any sender makes stamps ``first_call`` (``time.time()``) and ``modules``
(``sorted(sys.modules)`` at that moment), ``frozen`` (``gc.get_freeze_count()`` then; OUT is written at once, then again with ``returned``
when ``main`` returns; ``verb_returned`` when the ``migrate`` verb's ``run`` returned). The
same script measures any revision of the package (put it first on ``PYTHONPATH``).
"""

from __future__ import annotations

import json
import os
import sys
import time

OUT = sys.argv[1]
RECORD: dict = {"started": time.time()}
WRAPPED = "longmem_etl.migrate.uploader"


def _wrap_senders(module) -> None:
    make_sender = module.make_sender

    def recording_make_sender(*args, **kwargs):
        send = make_sender(*args, **kwargs)

        def first_call_stamped(*a, **kw):
            if "first_call" not in RECORD:
                RECORD["first_call"] = time.time()
                RECORD["modules"] = sorted(sys.modules)
                RECORD["frozen"] = __import__("gc").get_freeze_count()
                _write()  # now: a test may kill -9 this process as soon as it sees the file
            return send(*a, **kw)

        return first_call_stamped

    module.make_sender = recording_make_sender


def _wrap_verb(module) -> None:
    """Stamp ``verb_returned`` when the verb's ``run`` returns (before anything `main` does on
    the way out, e.g. a lean exit, which so counts as exit cost)."""
    import functools

    run = module.run

    @functools.wraps(run)  # keeps __module__: `cli.main.lean_exit` looks the verb's module up
    def stamped_run(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        finally:
            RECORD["verb_returned"] = time.time()

    module.run = stamped_run  # `register` reads the global when it is called, after this


WRAPPERS = {WRAPPED: _wrap_senders, "longmem_etl.cli.migrate": _wrap_verb}


class _Finder:
    """Finds nothing itself: asks the other finders for the modules in `WRAPPERS` and wraps
    their loaders, so each is changed as it is loaded (before anyone imports its names)."""

    def find_spec(self, name, path, target=None):
        wrap = WRAPPERS.get(name)
        if wrap is None:
            return None
        import importlib.util

        sys.meta_path.remove(self)  # find the real spec without finding ourselves again
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            wrap(module)

        spec.loader.exec_module = exec_and_wrap
        return spec


def _write() -> None:
    """The record so far, replacing OUT atomically (a reader never sees half of it)."""
    with open(OUT + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(RECORD, fh)
    os.replace(OUT + ".tmp", OUT)


def main() -> int:
    sys.argv = ["longmem-etl", *sys.argv[2:]]
    sys.meta_path.insert(0, _Finder())
    from longmem_etl.cli.main import main as cli_main

    code = cli_main()
    RECORD["returned"] = time.time()
    _write()
    return code


if __name__ == "__main__":
    sys.exit(main())
