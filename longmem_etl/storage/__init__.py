"""Where snapshot roots live: a local directory or an S3-compatible bucket (``docs/s3.md``).

``open_store(root)`` turns a root string (``/path``, ``file:///path``, ``s3://BUCKET/PREFIX``) into a
:class:`~longmem_etl.storage.store.Store`, the few object operations the snapshot code needs.
``staging`` is how the verbs use an ``s3://`` root: the snapshots they read are mirrored into a
private local directory, the snapshot code runs there unchanged (atomic rename, locks, integrity),
and what it committed is published back with the object-store commit protocol of ``remote``.
"""

from __future__ import annotations

from longmem_etl.storage.store import Store, is_remote, open_store, split_snapshot_url

__all__ = ["Store", "is_remote", "open_store", "split_snapshot_url"]
