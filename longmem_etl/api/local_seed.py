"""Seed an embedded store from a dump file, through the same reader ``convert`` uses (every dump
format, BOM, compression, streaming), decoding numbers exactly (``jsonio``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longmem_etl import jsonio
from longmem_etl.api.endpoints import parse_local
from longmem_etl.errors import BadInput
from longmem_etl.progress import progress as progress_bar


def seed_from_file(
    store_uri: str, dump_path: str, *, replace: bool = False, progress: bool = False
) -> dict[str, Any]:
    """Load ``dump_path`` into ``store_uri`` (``local:PATH``) as it is; returns counts."""
    from longmem_etl.api.local import LocalStore
    from longmem_etl.dumps.read import open_dump

    if not store_uri.startswith("local:"):
        raise BadInput(f"{store_uri}: seed needs a local:PATH store")
    parsed = parse_local(store_uri)
    if not Path(dump_path).is_file():
        raise BadInput(f"{dump_path}: no such file")
    src = open_dump(dump_path)  # whole-file problems -> BadInput before the store is touched
    bar = progress_bar(src.total, desc="seed", unit="mem", show=progress)

    def batches():
        for start, raws in src.batches():
            batch = []
            for i, raw in enumerate(raws):
                try:
                    batch.append(jsonio.loads(raw))
                except Exception as exc:  # msgspec.DecodeError: one bad row spoils the seed
                    raise BadInput(
                        f"{dump_path}: memories[{start + i}]: not valid JSON ({exc})"
                    ) from None
            bar.update(len(batch))
            yield batch

    existed = parsed.path.exists()
    try:
        with bar, LocalStore(parsed.path) as store:
            counts = store.seed_source(src.header, src.collections, batches(), replace=replace)
    except BaseException:
        if not existed:  # nothing half-written: a store we created for this seed goes again
            for suffix in ("", "-wal", "-shm"):
                Path(str(parsed.path) + suffix).unlink(missing_ok=True)
        raise
    return {"store": f"local:{parsed.path}", "from": str(dump_path), **counts}
