"""Dump files: read (formats, streaming), normalize (rows -> Arrow), write (snapshot -> dump)."""

from longmem_etl.dumps.normalize import Normalizer, normalize_memories
from longmem_etl.dumps.read import DumpSource, dump_format, is_dump_path, open_dump
from longmem_etl.dumps.write import write_dump

__all__ = [
    "DumpSource",
    "Normalizer",
    "dump_format",
    "is_dump_path",
    "normalize_memories",
    "open_dump",
    "write_dump",
]
