"""One masking function for everything the toolkit writes or prints: ``mask(text) -> text``.

An API key must never reach a journal row, a dead letter, a ``status`` line, stderr or a manifest,
even when a server (or an SDK) echoes it back inside an error message. Three things are masked:

- the *known key values*: the value of every environment variable the run reads a key from
  (``LONGMEM_API_KEY`` always, plus any ``--source-key-env`` / ``--target-key-env`` name, registered
  with `watch_env` when an endpoint is opened); values shorter than 6 characters are ignored, since
  masking them would mangle ordinary words;
- URL userinfo: ``https://user:pass@host`` -> ``https://***@host``;
- secret-looking query parameters: ``key``, ``api_key``, ``token``, ``secret``, ``password``,
  ``signature``, ``X-Amz-*`` and the like -> ``?key=***``.

``mask`` is cheap on text without secrets and idempotent; it never raises.
"""

from __future__ import annotations

import os
import re
import threading

from longmem_etl.api.keys import DEFAULT_KEY_ENV

MASK = "***"
DEFAULT_KEY_ENVS = (DEFAULT_KEY_ENV,)
_MIN_SECRET_LEN = 6

_lock = threading.Lock()
_watched: set[str] = set(DEFAULT_KEY_ENVS)

# scheme://userinfo@ — userinfo is everything up to the last '@' before the host part ends.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#@'\"<>]+@")
# name=value in a query string (or anything shaped like one), when the name looks secret.
_SECRET_PARAM = re.compile(
    r"(?i)([?&;]|\b)("
    r"(?:[a-z0-9_\-]*?(?:api[_\-]?key|access[_\-]?key|secret|token|password|passwd|pwd|signature|"
    r"credential|auth|sig))|key|x-amz-[a-z0-9\-]+"
    r")=([^&\s#'\"<>]+)"
)


def watch_env(*names: str | None) -> None:
    """Mask the values of these environment variables from now on (key env vars a run uses)."""
    with _lock:
        _watched.update(n for n in names if n)


def _known_values() -> list[str]:
    with _lock:
        names = list(_watched)
    values = {os.environ.get(n) or "" for n in names}
    return sorted((v for v in values if len(v) >= _MIN_SECRET_LEN), key=len, reverse=True)


def mask(text: object, *, keys_only: bool = False) -> str:
    """``text`` (anything; made a string) with known keys, URL userinfo and secret query values
    replaced by ``***``. ``keys_only``: mask only the known key values (for user data such as a
    dead letter's item, where a URL in a memory's text is content, not a leak)."""
    return _mask(text, _known_values(), keys_only)


def _mask(text: object, values: list[str], keys_only: bool) -> str:
    s = text if isinstance(text, str) else str(text)
    for value in values:
        if value in s:
            s = s.replace(value, MASK)
    if keys_only:
        return s
    if "@" in s:
        s = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", s)
    if "=" in s:
        s = _SECRET_PARAM.sub(
            lambda m: m.group(0) if m.group(3) == MASK else f"{m.group(1)}{m.group(2)}={MASK}", s
        )
    return s


def mask_obj(value: object, *, keys_only: bool = False) -> object:
    """``mask`` applied to every string inside a JSON-like value (dict keys too). The known key
    values are looked up once for the whole value, not once per string: a migration's result
    holds thousands of strings (one group per collection and tag), and the per-string lookup
    (a lock, the environment, a sort) was most of the ~20 ms its masking took at 20k."""
    return _mask_obj(value, _known_values(), keys_only)


def _mask_obj(value: object, values: list[str], keys_only: bool) -> object:
    if isinstance(value, str):
        return _mask(value, values, keys_only)
    if isinstance(value, dict):
        return {
            _mask(k, values, keys_only): _mask_obj(v, values, keys_only) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_mask_obj(v, values, keys_only) for v in value]
    return value
