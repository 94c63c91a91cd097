"""Entry point: parse, dispatch to the verb, turn toolkit errors into one line and an exit code."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from longmem_etl import __version__
from longmem_etl.errors import EXIT_ERROR, LongmemETLError

EPILOG = """\
start here:
  longmem-etl quickstart                      the whole story on embedded local tenants

exit codes: 0 ok; 2 bad input or usage; 3 finished but incomplete; 1 anything else.
API keys are read from environment variables only (default LONGMEM_API_KEY).
"""


def _verb_modules() -> list:
    import longmem_etl.cli as pkg

    mods = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name in {"main", "common"} or info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"longmem_etl.cli.{info.name}")
        if hasattr(mod, "register"):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longmem-etl",
        description="Move, back up and analyse Longmem memories.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"longmem-etl {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for mod in _verb_modules():
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    identity = getattr(args, "identity", None)
    if identity:  # for every reader below the verb (and only for this run)
        from longmem_etl.snapshots.crypto import use_identity_file

        use_identity_file(identity)
    try:
        return int(args.func(args) or 0)
    except LongmemETLError as exc:
        print(f"longmem-etl {args.verb}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"longmem-etl {args.verb}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: one line, with the traceback only when asked for
        if os.environ.get("LONGMEM_ETL_DEBUG"):
            raise
        print(
            f"longmem-etl {args.verb}: internal error: {type(exc).__name__}: {exc} "
            "(set LONGMEM_ETL_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    finally:
        if identity:
            use_identity_file(None)


if __name__ == "__main__":
    sys.exit(main())
