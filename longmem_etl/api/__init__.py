"""Longmem endpoints behind one protocol: the embedded SQLite store and the official SDK."""

from longmem_etl.api.protocol import LongmemAPI

__all__ = ["LongmemAPI"]
