"""Dump files: read (formats, streaming), normalize (rows -> Arrow). Snapshot -> dump file is
``snapshots.dump.write_dump`` (dumps sit below snapshots and never import them)."""

from longmem_etl.dumps.normalize import Normalizer, normalize_memories
from longmem_etl.dumps.read import DumpSource, dump_format, is_dump_path, open_dump

__all__ = [
    "DumpSource",
    "Normalizer",
    "dump_format",
    "is_dump_path",
    "normalize_memories",
    "open_dump",
]
