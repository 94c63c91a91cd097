"""Progress on a real terminal: a child process whose stderr is a pseudo-terminal (the bar's only
condition), so what a user at a shell sees is what is asserted."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "longmem_etl" / "sample_data" / "acme-small.json"

CHILD = """
import sys
from longmem_etl.api.local_seed import seed_from_file
from longmem_etl.backup import backup
from longmem_etl.snapshots import convert_dump
from longmem_etl.snapshots.dump import write_dump

sample, tmp, on = sys.argv[1], sys.argv[2], sys.argv[3] == "on"
snap = convert_dump(sample, tmp + "/snaps", progress=on).path
write_dump(snap, tmp + "/dump.jsonl", progress=on)
seed_from_file("local:" + tmp + "/a.db", sample, progress=on)
backup("local:" + tmp + "/a.db", tmp + "/backups", progress=on)
print("done")
"""


def _stderr_on_a_terminal(args: list[str]) -> tuple[str, str]:
    """(stdout, what the child wrote to its terminal stderr)."""
    master, slave = pty.openpty()
    # a terminal 100 columns wide: a pty starts at 0 x 0, where tqdm draws an empty bar
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, *args],
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            timeout=120,
            check=True,
        )
        os.close(slave)
        slave = -1
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child's end is closed and everything was read
                break
            if not chunk:
                break
            seen += chunk
        return proc.stdout, seen.decode("utf-8", "replace")
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)


def test_progress_off_draws_nothing_on_a_terminal(tmp_path: Path) -> None:
    """convert, dump, seed and backup asked for no progress, from Python: not one character
    (each used to make a bar and then disable it, after it had drawn its first line)."""
    out, seen = _stderr_on_a_terminal([str(SAMPLE), str(tmp_path), "off"])
    assert out.strip() == "done" and seen == ""


def test_progress_on_draws_each_bar_on_a_terminal(tmp_path: Path) -> None:
    out, seen = _stderr_on_a_terminal([str(SAMPLE), str(tmp_path), "on"])
    assert out.strip() == "done"
    for bar in ("convert acme", "dump", "seed", "backup"):
        assert bar in seen, bar
