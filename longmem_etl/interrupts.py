"""Ctrl-C that stops a running DuckDB query at once.

While DuckDB runs a query the main thread sits in C code, and Python runs its SIGINT handler only
when control comes back: a big join ignored Ctrl-C for over a minute. `interruptible(con)` makes
the signal's C-level handler wake a watcher thread (``signal.set_wakeup_fd``), which calls
``con.interrupt()``; DuckDB then stops within milliseconds, and the block raises
``KeyboardInterrupt`` (the CLI's exit 130) whatever error the interrupted query surfaced as, so the
usual cleanup (``with`` blocks, temp snapshots) runs. Outside the main thread (Dagster's workers),
or when SIGINT is ignored, it does nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def interruptible(con: Any) -> Iterator[None]:
    """Within the block, SIGINT interrupts ``con``'s running query and ends in KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(
        signal.SIGINT
    ) in (signal.SIG_IGN, None):
        yield
        return
    import duckdb

    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not allowed here
        reader.close()
        writer.close()
        yield
        return
    fired = threading.Event()

    def watch() -> None:
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            if previous != -1:  # whoever had the wakeup fd before still hears about signals
                with contextlib.suppress(OSError):
                    os.write(previous, data)
            if signal.SIGINT in data:
                fired.set()
                with contextlib.suppress(Exception):
                    con.interrupt()

    watcher = threading.Thread(target=watch, name="longmem-etl-sigint", daemon=True)
    watcher.start()
    try:
        yield
        if fired.is_set():  # Ctrl-C landed as the last query ended: the connection is left
            raise KeyboardInterrupt  # interrupted, so the next query would fail; stop here
    except duckdb.InterruptException:
        raise KeyboardInterrupt from None
    except BaseException:
        if fired.is_set():
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.set_wakeup_fd(previous)
        with contextlib.suppress(OSError):
            writer.shutdown(socket.SHUT_RDWR)
        writer.close()
        watcher.join(timeout=2)
        reader.close()
