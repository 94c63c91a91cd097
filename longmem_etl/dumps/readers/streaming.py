"""Reader 4: a ``.json`` streamed with ijson (bounded memory, exact numbers): one pass validates
the file and builds the header, a second yields the memories. Files holding a memory nested deeper
than ``jsonio.MAX_DEPTH`` are rebuilt from ijson's flat events (``serialized_items``) so that
``normalize`` can reject that row with its reason."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, BinaryIO

import msgspec

from longmem_etl import jsonio
from longmem_etl.dumps.readers.base import BOM, Chunk, DumpSource, check_header, list_chunk
from longmem_etl.dumps.readers.compressed import COMPRESSION_ERRORS, compression_error, open_binary
from longmem_etl.dumps.readers.whole import read_json_whole
from longmem_etl.errors import BadInput

_COLLECTIONS = ("collections",)  # a key no JSON object can have, to park collections in header


class _PrefixClash(Exception):
    """A top-level key ijson's dotted prefixes cannot tell from the memories items."""


def _ijson_problem(path: Any, exc: Exception) -> BadInput:
    msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()
    if "premature" in msg.lower() or "incomplete" in msg.lower():
        return BadInput(f"{path}: not valid JSON: input is truncated ({msg})")
    if "trailing" in msg.lower() or "additional data" in msg.lower():
        return BadInput(f"{path}: not valid JSON: trailing garbage after the top-level value")
    return BadInput(f"{path}: not valid JSON: {msg}")


class _Prefixed:
    """A byte stream with a few already-read bytes put back in front (only ``read``, for ijson)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                out, self._head = self._head + self._rest.read(), b""
                return out
            out, self._head = self._head[:n], self._head[n:]
            if len(out) < n:
                out += self._rest.read(n - len(out))
            return out
        return self._rest.read(n)

    def close(self) -> None:
        self._rest.close()


def _event_kind(event: str) -> str:
    return {
        "start_array": "an array",
        "string": "a string",
        "number": "a number",
        "boolean": "a boolean",
        "null": "null",
    }.get(event, event)


def _ensure_not_empty(path: str) -> None:
    """BadInput("empty file") when the (decompressed) file holds only whitespace / a BOM."""
    try:
        with open_binary(path) as f:
            head = f.read(3)
            if head == BOM:
                head = b""
            while True:
                if head.strip():
                    return
                head = f.read(1 << 16)
                if not head:
                    raise BadInput(f"{path}: empty file")
    except COMPRESSION_ERRORS as exc:
        raise compression_error(path, exc) from None


def read_json_streaming(path: str, batch_size: int) -> DumpSource:
    _ensure_not_empty(path)
    try:
        header, collections, has_memories, deep = _scan_top_level(path)
    except _PrefixClash:
        return read_json_whole(path, batch_size)
    if not has_memories:
        raise BadInput(f"{path}: no 'memories' list at the top level")
    check_header(path, header, collections)

    def gen() -> Iterator[Chunk]:
        import ijson

        row = 0
        batch: list[bytes] = []
        try:
            with open_binary(path) as f:
                head = f.read(3)
                stream = f if head == BOM else _Prefixed(head, f)
                items = (
                    serialized_items(stream)
                    if deep
                    else (
                        jsonio.dumps(item)
                        for item in ijson.items(stream, "memories.item", use_float=False)
                    )
                )
                for item in items:
                    batch.append(item)
                    if len(batch) >= batch_size:
                        yield list_chunk(row, batch)
                        row += len(batch)
                        batch = []
        except COMPRESSION_ERRORS as exc:
            raise compression_error(path, exc) from None
        if batch:
            yield list_chunk(row, batch)

    return DumpSource.streaming(path, header, collections, gen(), os.path.getsize(path))


def _scalar_json(event: str, value: Any) -> bytes:
    if event == "string":
        return msgspec.json.encode(value)
    if event == "number":
        return str(value).encode()  # int, or the Decimal ijson gives (exact)
    if event == "boolean":
        return b"true" if value else b"false"
    return b"null"


def serialized_items(stream: Any) -> Iterator[bytes]:
    """Each top-level ``memories`` item as JSON text, rebuilt from ijson's flat events without
    building Python values or recursing: the path for a file holding a too-deep memory (which
    ``normalize`` then rejects with its reason). Slower than ``ijson.items``; only such files take it."""
    import ijson

    events = ijson.basic_parse(stream, use_float=False)
    depth, key = 0, None
    for event, value in events:  # walk to the top-level "memories" array
        if depth == 1 and event == "map_key":
            key = value
        elif event in ("start_map", "start_array"):
            depth += 1
            if depth == 2 and key == "memories":
                break
        elif event in ("end_map", "end_array"):
            depth -= 1
    parts: list[bytes] = []
    stack: list[list[Any]] = []  # [is_array, items so far] per open container

    def comma() -> None:
        if stack and stack[-1][0]:
            if stack[-1][1]:
                parts.append(b",")
            stack[-1][1] += 1

    for event, value in events:
        if not stack and event == "end_array":
            return
        if event == "map_key":
            if stack[-1][1]:
                parts.append(b",")
            stack[-1][1] += 1
            parts.append(msgspec.json.encode(value) + b":")
            continue
        if event in ("start_map", "start_array"):
            comma()
            parts.append(b"{" if event == "start_map" else b"[")
            stack.append([event == "start_array", 0])
            continue
        if event in ("end_map", "end_array"):
            parts.append(b"}" if event == "end_map" else b"]")
            stack.pop()
        else:
            comma()
            parts.append(_scalar_json(event, value))
        if not stack:
            yield b"".join(parts)
            parts = []


def _scan_top_level(path: str) -> tuple[dict[str, Any], Any, bool, bool]:
    """One ijson pass over the whole file: validates it, builds every top-level value but memories.

    Memory items are only parsed (events skipped), so memory use stays bounded. Returns ``(header,
    collections, has memories, some memory nests deeper than jsonio.MAX_DEPTH)``.
    """
    import ijson

    header: dict[str, Any] = {}
    collections: Any = None
    has_memories = False
    try:
        with open_binary(path) as f:
            head = f.read(3)
            stream = f if head == BOM else _Prefixed(head, f)
            # basic_parse: no dotted prefixes (they grow with depth: quadratic memory on a
            # value nested 100,000 deep)
            events = ijson.basic_parse(stream, use_float=False)
            try:
                event, value = next(events)
            except StopIteration:
                raise BadInput(f"{path}: empty file") from None
            if event != "start_map":
                raise BadInput(
                    f"{path}: top level is {_event_kind(event)}, expected an object with a 'memories' list"
                )
            key: Any = None
            builder: Any = None
            deep = False
            depth = 1  # tracked by events, not prefixes: a top-level key "" has prefix ""
            in_memories = False
            for event, value in events:
                if depth == 1:
                    if event == "map_key":
                        key = value
                        continue
                    if event == "end_map":
                        break
                    if key == "memories":
                        if event != "start_array":
                            raise BadInput(f"{path}: 'memories' is not a list")
                        has_memories = in_memories = True
                        depth += 1
                        continue
                    builder = ijson.ObjectBuilder()
                    builder.event(event, value)
                    if event in ("start_map", "start_array"):
                        depth += 1
                    else:
                        _store(header, key, builder.value)
                    continue
                if event in ("start_map", "start_array"):
                    depth += 1
                    if depth > jsonio.MAX_DEPTH + 2:  # the top object, memories, the memory
                        if not in_memories:
                            raise BadInput(f"{path}: top-level key {key!r} is {jsonio.TOO_DEEP}")
                        deep = True
                elif event in ("end_map", "end_array"):
                    depth -= 1
                if in_memories:
                    if depth == 1:
                        in_memories = False
                    continue
                builder.event(event, value)
                if depth == 1:
                    _store(header, key, builder.value)
            # anything after the top-level object is trailing garbage
            for _ in events:
                raise BadInput(
                    f"{path}: not valid JSON: trailing garbage after the top-level value"
                )
    except BadInput:
        raise
    except COMPRESSION_ERRORS as exc:
        raise compression_error(path, exc) from None
    except Exception as exc:  # ijson.JSONError, IncompleteJSONError
        raise _ijson_problem(path, exc) from None
    collections = header.pop(_COLLECTIONS, None)
    if any(k.startswith("memories.") for k in header):
        # ijson names items by dotted prefix: such a key would be confused with memory items
        raise _PrefixClash()
    return _exactify(header), _exactify(collections), has_memories, deep


def _store(header: dict[Any, Any], key: str, value: Any) -> None:
    header[_COLLECTIONS if key == "collections" else key] = value


def _exactify(value: Any) -> Any:
    """ijson gives Decimal for every non-integer; turn the ones a float holds exactly into floats."""
    return jsonio.loads(jsonio.dumps(value)) if value is not None else None
