"""Entry point: parse, dispatch to the verb, turn toolkit errors into one line and an exit code."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from longmem_etl import __version__
from longmem_etl.errors import EXIT_ERROR, LongmemETLError, environment_problem

EPILOG = """\
start here:
  longmem-etl quickstart                      the whole story on embedded local tenants

exit codes: 0 ok; 2 bad input or usage; 3 finished but incomplete; 1 anything else.
API keys are read from environment variables only (default LONGMEM_API_KEY).
"""


_LINE_BREAKS = {
    c: f"\\u{c:04x}" for c in (0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029)
}


def one_line(message: str) -> str:
    """The message with every character that could end a line escaped (a value quoted from a hostile
    file may hold a newline, U+0085 or U+2028), so the error stays ONE line for people and scripts."""
    return message.translate(_LINE_BREAKS)


def _verb_names() -> list[str]:
    """The modules of ``longmem_etl.cli`` that may hold a verb (found without importing them)."""
    import longmem_etl.cli as pkg

    return [
        info.name
        for info in pkgutil.iter_modules(pkg.__path__)
        if info.name not in {"main", "common"} and not info.name.startswith("_")
    ]


def _verb_modules(only: str | None = None) -> list:
    """The verb modules, in ``ORDER``; with ``only``, just that verb's (each module is named
    after its ``VERB``), so a command does not import the other fifteen verbs' modules."""
    mods = []
    for name in [only] if only else _verb_names():
        mod = importlib.import_module(f"longmem_etl.cli.{name}")
        if hasattr(mod, "register"):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def _named_verb(argv: Sequence[str]) -> str | None:
    """The verb when ``argv`` starts with one (``migrate --source ...``), else None (``--help``,
    ``--version``, no verb, a typo: those need the whole parser, which lists every verb)."""
    if not argv or argv[0] not in _verb_names():
        return None
    return argv[0]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The CLI's parser: every verb's, or, when ``argv`` names a verb first, only that verb's
    subparser (the usage, help and errors of that verb are the same either way)."""
    only = _named_verb(argv) if argv is not None else None
    parser = argparse.ArgumentParser(
        prog="longmem-etl",
        description="Move, back up and analyse Longmem memories.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"longmem-etl {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for mod in _verb_modules(only):
        mod.register(sub)
    return parser


_SIGINT = threading.Event()


def _on_sigint(signum: int, frame: Any) -> None:
    _SIGINT.set()
    raise KeyboardInterrupt


def _watch_sigint() -> Any:
    """Python's own Ctrl-C behaviour, remembering that it happened: a library may turn the
    KeyboardInterrupt into its own error (DuckDB checks for signals mid-query and raises
    ``RuntimeError: Query interrupted``), which is still the user's Ctrl-C (exit 130), not a bug."""
    _SIGINT.clear()
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None
    return signal.signal(signal.SIGINT, _on_sigint)


def lean_exit(func: Any) -> None:
    """Before the interpreter shuts down after a verb whose module says it closes what it
    opens (``CLOSES_WHAT_IT_OPENS = True``): collect the garbage once, while every module is
    still there, then freeze what survives, so the collections run during shutdown have no
    objects to walk (a migration leaves hundreds of thousands behind: ~0.05 s). Buffers, atexit
    handlers and files still close normally: this is not ``os._exit``."""
    module = sys.modules.get(getattr(func, "__module__", "") or "")
    if not getattr(module, "CLOSES_WHAT_IT_OPENS", False):
        return
    import gc

    gc.collect()
    gc.freeze()


def freeze_imports(args: argparse.Namespace) -> None:
    """Called by a verb once its stack is imported, when its process ends with it (the command,
    not a Python caller: `main` sets ``args.whole_process``): freeze the objects the imports
    made (pyarrow's, numpy's, the toolkit's), which live as long as the process anyway, so no
    collection walks them again. A migration saw a full collection ~0.6 s in, during its first
    rounds of calls (20 ms holding the GIL), and the one `lean_exit` makes took 18 ms instead of
    5. Nothing is collected first: import-time garbage is small, and collecting it would delay
    the first call. Objects freed by reference counting are freed as ever."""
    if getattr(args, "whole_process", False):
        import gc

        gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """The ``longmem-etl`` command. ``argv`` None: this process's command line, and the process
    ends when this returns (`lean_exit` applies); a list: a call from Python, nothing frozen."""
    whole_process = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.whole_process = whole_process  # see `freeze_imports`
    try:
        return _run_verb(args)
    finally:
        if whole_process:
            lean_exit(args.func)


def _run_verb(args: argparse.Namespace) -> int:
    """The verb, with its errors turned into one line and an exit code."""
    identity = getattr(args, "identity", None)
    if identity:  # for every reader below the verb (and only for this run)
        from longmem_etl.snapshots.crypto import use_identity_file

        use_identity_file(identity)
    previous = _watch_sigint()
    try:
        return int(args.func(args) or 0)
    except LongmemETLError as exc:
        from longmem_etl.storage.staging import to_remote

        print(f"longmem-etl {args.verb}: {one_line(to_remote(str(exc)))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"longmem-etl {args.verb}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: one line, with the traceback only when asked for
        if _SIGINT.is_set():  # whatever a Ctrl-C surfaced as (DuckDB: "Query interrupted")
            print(f"longmem-etl {args.verb}: interrupted", file=sys.stderr)
            return 130
        problem = environment_problem(exc)  # disk full, read-only, a file in the way: exit 2
        if problem is not None:
            print(f"longmem-etl {args.verb}: {one_line(str(problem))}", file=sys.stderr)
            return problem.exit_code
        if os.environ.get("LONGMEM_ETL_DEBUG"):
            raise
        from longmem_etl.secrets import mask

        print(
            f"longmem-etl {args.verb}: internal error: {type(exc).__name__}: {one_line(mask(exc))} "
            "(set LONGMEM_ETL_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if identity:
            use_identity_file(None)


if __name__ == "__main__":
    sys.exit(main())
