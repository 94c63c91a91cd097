"""Opening a dump file: gzip / zstd decompression, the errors a broken stream raises, and the
whole decompressed file as one writable buffer (plain files mapped copy-on-write)."""

from __future__ import annotations

import gzip
import mmap
import os
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from longmem_etl.dumps.readers.base import BOM, WS, dump_format
from longmem_etl.errors import BadInput


def open_binary(path: str | os.PathLike) -> BinaryIO:
    """The decompressed byte stream of a dump file."""
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{path}: no such file")
    if p.is_dir():
        raise BadInput(f"{path}: is a directory, expected a dump file")
    _kind, compression = dump_format(p)
    raw = open(p, "rb")  # noqa: SIM115 - returned to the caller
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        return _ZstdReader(raw, zstandard.ZstdDecompressor())  # type: ignore[return-value]
    return raw


class _ZstdReader:
    """A zstd stream (one or more frames) as a ``read``/``readline`` file; EOFError when the data
    ends inside a frame (zstandard's own ``stream_reader`` just stops, so a truncated file looked
    empty or short)."""

    def __init__(self, raw: BinaryIO, dctx: Any) -> None:
        self._raw, self._dctx = raw, dctx
        self._obj = dctx.decompressobj()
        self._buf = bytearray()
        self._eof = False
        self._started = False  # bytes of the current frame seen

    def _fill(self, want: int) -> None:
        while not self._eof and (want < 0 or len(self._buf) < want):
            block = self._raw.read(1 << 20)
            if not block:
                if self._started:
                    raise EOFError("zstd data ends inside a frame")
                self._eof = True
                break
            while block:
                self._started = True
                self._buf += self._obj.decompress(block)
                if not self._obj.eof:
                    break
                block = self._obj.unused_data
                self._obj = self._dctx.decompressobj()
                self._started = False

    def read(self, n: int = -1) -> bytes:
        self._fill(n if n is not None else -1)
        if n is None or n < 0:
            out, self._buf = bytes(self._buf), bytearray()
        else:
            out, self._buf = bytes(self._buf[:n]), self._buf[n:]
        return out

    def readline(self) -> bytes:
        while True:
            i = self._buf.find(b"\n")
            if i >= 0 or self._eof:
                end = i + 1 if i >= 0 else len(self._buf)
                out, self._buf = bytes(self._buf[:end]), self._buf[end:]
                return out
            self._fill(len(self._buf) + (1 << 16))

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> _ZstdReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def compression_error(path: Any, exc: BaseException) -> BadInput:
    kind = dump_format(path)[1] or "file"
    if isinstance(exc, EOFError):
        return BadInput(f"{path}: truncated {kind} stream (compressed data ends early)")
    return BadInput(f"{path}: corrupt {kind} data ({exc})")


COMPRESSION_ERRORS: tuple[type[BaseException], ...] = (gzip.BadGzipFile, zlib.error, EOFError)
try:  # zstandard is a dependency, but keep the reader importable without it
    import zstandard as _zstd

    COMPRESSION_ERRORS += (_zstd.ZstdError,)
except ImportError:  # pragma: no cover
    pass


def read_all_bytes(path: str | os.PathLike) -> bytearray | memoryview:
    """The whole decompressed file as a *writable* buffer (see ``inplace_chunks``), BOM removed;
    BadInput for corrupt compression or empty files.

    A plain file is mapped copy-on-write (``mmap.ACCESS_COPY``): no read copy, pages come from the
    page cache as the decoder scans them, and the few bytes ``inplace_chunks`` changes stay
    private to this process. A compressed one is decompressed into a bytearray.
    """
    data: bytearray | memoryview
    try:
        if dump_format(path)[1] is None:
            size = os.path.getsize(path)
            if size == 0:
                raise BadInput(f"{path}: empty file")
            with open(path, "rb") as f:
                data = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY))
        else:
            data = bytearray()
            with open_binary(path) as f:
                while block := f.read(1 << 24):
                    data += block
    except COMPRESSION_ERRORS as exc:
        raise compression_error(path, exc) from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror or exc})") from None
    if bytes(data[:3]) == BOM:
        data = memoryview(data)[len(BOM) :]
    if WS.match(data).end() == len(data):  # type: ignore[union-attr]  # only whitespace
        raise BadInput(f"{path}: empty file")
    return data
