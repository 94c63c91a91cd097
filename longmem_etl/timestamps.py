"""ISO-8601 timestamps, parsed one way everywhere (dump reader, spec ``now`` options, ``--now``, the
embedded store's ordering, dump comparison), so a value one part accepts the others read the same.

Accepted: ``YYYY-MM-DD``, optionally ``[T|t| ]HH:MM[:SS[.fraction]]``, optionally ``Z``/``z`` or
``±HH[:MM]``; no offset means UTC. Standard library only (a leaf module).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_TS_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


def parse_timestamp(text: str) -> tuple[int, bool]:
    """``(microseconds since epoch UTC, exact)`` for an ISO-8601 string; ValueError if it is not one.

    ``exact`` is False when rendering the instant back could not give the same meaning: digits below
    the microsecond, or no UTC offset (read as UTC).
    """
    m = _TS_RE.match(text)
    if not m:
        raise ValueError(text)
    y, mo, d, hh, mi, ss, frac, off = m.groups()
    exact = off is not None and hh is not None
    micro = 0
    if frac:
        micro = int((frac + "000000")[:6])
        if frac[6:].strip("0"):
            exact = False
    dt = datetime(
        int(y),
        int(mo),
        int(d),
        int(hh or 0),
        int(mi or 0),
        int(ss or 0),
        micro,
        tzinfo=timezone.utc,
    )
    if off and off not in ("Z", "z"):
        sign = -1 if off[0] == "-" else 1
        digits = off[1:].replace(":", "")
        delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        if delta >= timedelta(hours=24):
            raise ValueError(text)
        dt = dt - sign * delta
    return (dt - _EPOCH) // _US, exact


def to_datetime(text: str) -> datetime:
    """The instant ``text`` names, as an aware UTC datetime (microsecond precision); ValueError if
    it is not an ISO-8601 timestamp."""
    micros, _exact = parse_timestamp(text.strip())
    return _EPOCH + micros * _US
