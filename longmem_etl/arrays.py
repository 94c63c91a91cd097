"""Arrow arrays built straight from buffers.

``pa.array(list)`` first asks whether the list is a pandas object, and the first such question in
a process imports pandas (~0.5 s). ``convert`` never needs pandas, so the columns it builds outside
the hot decode path (collections, masks, the string columns made from raw JSON slices) are built
here from NumPy buffers instead.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def string_array(n: int, offsets: np.ndarray, data: bytes, is_null: np.ndarray | None) -> pa.Array:
    """string column from int64 offsets, UTF-8 bytes and a null mask (None: no nulls)."""
    validity, nulls = None, 0
    if is_null is not None:
        nulls = int(np.count_nonzero(is_null))
        if nulls:
            validity = pa.py_buffer(np.packbits(~is_null, bitorder="little"))
    if offsets[-1] < 2**31:
        return pa.StringArray.from_buffers(
            n, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data), validity, nulls
        )
    big = pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(data), validity, nulls
    )
    return big.cast(pa.string())


def strings(values: Sequence[str | None]) -> pa.Array:
    """``pa.array(values, pa.string())``: that itself once pandas is imported (several times
    faster on big lists), else from buffers, never importing it: one ``join`` and one encode for
    the whole column, byte lengths taken from the character lengths when the text is ASCII (ids,
    fingerprints, states: about twice as fast as encoding each value), else from each encoded
    value."""
    if "pandas" in sys.modules:
        return pa.array(values, pa.string())
    n = len(values)
    is_null = None
    if values.count(None):
        is_null = np.fromiter((v is None for v in values), dtype=bool, count=n)
        values = ["" if v is None else v for v in values]
    text = "".join(values)
    data = text.encode("utf-8")
    if len(data) == len(text):  # ASCII: one byte per character
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
    else:
        lengths = np.fromiter((len(v.encode("utf-8")) for v in values), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return string_array(n, offsets, data, is_null)


def int64s(values: Sequence[int] | np.ndarray) -> pa.Array:
    """``pa.array(values, pa.int64())`` (no nulls)."""
    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def int64s_with_nulls(values: Sequence[int | None]) -> pa.Array:
    """An int64 column with nulls, from NumPy (``pa.array(list)`` would import pandas)."""
    n = len(values)
    if None not in values:
        return int64s(np.fromiter(values, dtype=np.int64, count=n))
    is_null = np.fromiter((v is None for v in values), dtype=bool, count=n)
    data = np.fromiter((0 if v is None else v for v in values), dtype=np.int64, count=n)
    validity = pa.py_buffer(np.packbits(~is_null, bitorder="little"))
    return pa.Array.from_buffers(
        pa.int64(), n, [validity, pa.py_buffer(data)], null_count=int(is_null.sum())
    )


def sqlite_ints(text: bytes | None, n: int) -> np.ndarray | None:
    """SQLite's comma-separated integers (a ``group_concat``) as int64, or None unless there
    are exactly ``n``."""
    if text is None:
        return None
    values = np.fromstring(text, dtype=np.int64, sep=",")
    return values if len(values) == n else None


def concatenated_strings(data: bytes | None, lengths: bytes | None, n: int) -> pa.Array | None:
    """A string column of ``n`` values from SQLite's ``group_concat(col, '')`` (the UTF-8 bytes)
    and ``group_concat(coalesce(length(CAST(col AS BLOB)), -1), ',')`` (byte lengths, -1 for
    NULL): no Python object per value. None when the two do not agree (the caller reads the rows
    the plain way). The bytes are not checked to be UTF-8 here (see `api.localpages`)."""
    sizes = sqlite_ints(lengths, n)
    if sizes is None:
        return None
    is_null = sizes < 0
    sizes[is_null] = 0
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    data = data or b""
    if offsets[-1] != len(data):
        return None
    return string_array(n, offsets, data, is_null if is_null.any() else None)


def arrow_without_pandas() -> None:
    """Tell pyarrow, once per process, that pandas is not there to ask about, so its first
    ``pa.array(list)`` does not import pandas (~0.25-0.5 s, on the critical path of a command
    that never uses pandas: `migrate`). Only for processes the CLI owns: if pandas is already
    imported this does nothing, and a later conversion to or from pandas (``to_pandas``) still
    works: pyarrow imports pandas then."""
    if "pandas" in sys.modules:
        return
    hook = _NoPandas()
    sys.meta_path.insert(0, hook)  # an import of pandas now fails
    try:
        pa.array([0])  # pyarrow's one "is pandas there?" check, answered "no"
    finally:
        sys.meta_path.remove(hook)


class _NoPandas:
    """An import hook under which ``import pandas`` fails (see `arrow_without_pandas`)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"{name} is not used here", name=name)
