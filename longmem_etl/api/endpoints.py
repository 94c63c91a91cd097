"""URIs -> backends: ``local:PATH[?faults]`` (embedded store), ``https://HOST`` (official SDK).

Also answers "what is this source?" (endpoint, dump file or snapshot directory) and gives each
endpoint an *identity* safe to write into journals and manifests: scheme plus absolute path or base
URL plus a key fingerprint (first 12 hex digits of sha256 of the key) — never the key itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from longmem_etl.api.faults import FAULT_KEYS, FaultConfig
from longmem_etl.api.keys import DEFAULT_KEY_ENV, key_fingerprint, missing_key_message
from longmem_etl.api.limits import LIMIT_KEYS, StoreLimits
from longmem_etl.api.protocol import LongmemAPI
from longmem_etl.dumps.formats import DUMP_SUFFIXES_TEXT, dump_suffix
from longmem_etl.errors import BadInput
from longmem_etl.secrets import watch_env

ACCEPTED = (
    "accepted: local:PATH[?fault and limit options], https://HOST, "
    f"a dump file ({DUMP_SUFFIXES_TEXT}) or a snapshot directory"
)
ENDPOINTS_ACCEPTED = "accepted endpoints: local:PATH[?fault and limit options] or https://HOST"


def known_limits(uri: str) -> StoreLimits | None:
    """The limits a target is known to enforce: a ``local:`` store's (its URI's ``max_*``
    options, else the defaults); None for https endpoints, whose only documented limit (100 items
    per call) the migration plan already honours."""
    if uri.lower().startswith("local:"):
        return parse_local(uri).limits
    return None


@dataclass(frozen=True)
class LocalURI:
    path: Path
    faults: FaultConfig
    limits: StoreLimits = StoreLimits()


def is_endpoint(uri: str) -> bool:
    low = uri.lower()
    return low.startswith(("local:", "https://", "http://"))


def parse_local(uri: str) -> LocalURI:
    """``local:PATH[?k=v&...]`` -> absolute path and fault settings (unknown keys -> BadInput)."""
    if not uri.startswith("local:"):
        raise BadInput(f"{uri}: not a local: URI")
    rest = uri[len("local:") :]
    path_text, _, query = rest.partition("?")
    if not path_text:
        raise BadInput(f"{uri}: local: needs a file path, e.g. local:./tenant.db")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise BadInput(f"{uri}: malformed query string {query!r}") from None
    params: dict[str, str] = {}
    for k, v in pairs:
        if k in params:
            raise BadInput(f"{uri}: query parameter {k!r} given twice")
        params[k] = v
    unknown = sorted(set(params) - set(FAULT_KEYS) - set(LIMIT_KEYS))
    if unknown:
        raise BadInput(
            f"{uri}: unknown query parameter {unknown[0]!r}; accepted: "
            f"{', '.join((*FAULT_KEYS, *LIMIT_KEYS))}"
        )
    faults = FaultConfig.from_query({k: v for k, v in params.items() if k in FAULT_KEYS}, where=uri)
    limits = StoreLimits.from_query(params, where=uri)
    return LocalURI(Path(path_text).expanduser().resolve(), faults, limits)


def _base_url(uri: str) -> str:
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not host:
        raise BadInput(f"{uri}: no host in URL")
    if parts.username or parts.password:
        raise BadInput(f"{uri}: credentials in the URL are not accepted; use the key env var")
    if parts.query or parts.fragment:
        raise BadInput(f"{uri}: query strings are not accepted on https endpoints")
    if scheme == "http" and host not in ("localhost", "127.0.0.1", "::1"):
        raise BadInput(f"{uri}: plain http is only allowed for localhost; use https://")
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def open_endpoint(uri: str, *, key_env: str = DEFAULT_KEY_ENV, create: bool = True) -> LongmemAPI:
    """Open the backend a URI names. ``create=False`` refuses a ``local:`` store that does not
    exist yet (use it for sources: a typo must not back up an empty new store)."""
    if not isinstance(uri, str) or not uri:
        raise BadInput(f"empty endpoint URI; {ENDPOINTS_ACCEPTED}")
    low = uri.lower()
    if low.startswith("local:"):
        from longmem_etl.api.local import LocalStore

        parsed = parse_local(uri)
        return LocalStore(parsed.path, faults=parsed.faults, create=create, limits=parsed.limits)
    if low.startswith(("https://", "http://")):
        from longmem_etl.api.sdk import SDKEndpoint

        return SDKEndpoint(_base_url(uri), key_env=key_env)
    scheme = uri.split(":", 1)[0] if ":" in uri else None
    what = f"unknown URI scheme {scheme!r}" if scheme else "not an endpoint URI"
    raise BadInput(f"{uri}: {what}; {ENDPOINTS_ACCEPTED}")


Kind = Literal["endpoint", "dump", "snapshot"]


def classify_source(uri: str) -> Kind:
    """Tell an endpoint URI from a dump file from a snapshot directory (manifest.json inside).
    Anything else -> BadInput naming what is accepted."""
    if not isinstance(uri, str) or not uri:
        raise BadInput(f"empty source; {ACCEPTED}")
    if is_endpoint(uri):
        return "endpoint"
    if "://" in uri or (":" in uri.split("/", 1)[0] and len(uri.split(":", 1)[0]) > 1):
        raise BadInput(f"{uri}: unknown URI scheme {uri.split(':', 1)[0]!r}; {ACCEPTED}")
    path = Path(uri).expanduser()
    if path.is_dir():
        if (path / "manifest.json").is_file():
            return "snapshot"
        raise BadInput(f"{uri}: a directory but not a snapshot (no manifest.json); {ACCEPTED}")
    if path.is_file():
        if dump_suffix(path) is not None:
            return "dump"
        raise BadInput(f"{uri}: not a recognised dump file name; {ACCEPTED}")
    raise BadInput(f"{uri}: no such file or directory")


def endpoint_identity(
    uri: str, key_env: str = DEFAULT_KEY_ENV, *, require_key: bool = True
) -> dict[str, Any]:
    """What an endpoint *is*, for journals and manifests: ``{"scheme", "path"}`` for local stores
    (fault settings are not part of the identity: the same store with or without injected faults
    is the same target), ``{"scheme", "base_url", "key_env", "key_fingerprint"}`` for https.
    Never contains a key. With ``require_key`` an unset env var is BadInput, else fingerprint None."""
    if uri.lower().startswith("local:"):
        return {"scheme": "local", "path": str(parse_local(uri).path)}
    if uri.lower().startswith(("https://", "http://")):
        watch_env(key_env)
        base = _base_url(uri)
        key = os.environ.get(key_env)
        if not key and require_key:
            raise BadInput(missing_key_message(key_env))
        return {
            "scheme": urlsplit(base).scheme,
            "base_url": base,
            "key_env": key_env,
            "key_fingerprint": key_fingerprint(key) if key else None,
        }
    raise BadInput(f"{uri}: not an endpoint URI; {ENDPOINTS_ACCEPTED}")


def same_account(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Do two identities (from `endpoint_identity`, a source's may carry ``kind``) name the same
    account? Local stores compare by device and inode, so a hard link, a symlink or another
    spelling of the same SQLite file is recognised (``Path.resolve`` alone misses hard links);
    https endpoints by base URL and key fingerprint."""
    a = {k: v for k, v in a.items() if k != "kind"}
    b = {k: v for k, v in b.items() if k != "kind"}
    if a.get("scheme") == b.get("scheme") == "local":
        pa, pb = Path(a["path"]), Path(b["path"])
        try:
            return os.path.samefile(pa, pb)
        except OSError:  # one of them does not exist (yet): only a same path is the same store
            return pa.resolve() == pb.resolve()
    return a == b
