"""Which Iceberg catalog and warehouse ``publish`` writes to, from a URI and a path.

Catalog URIs (`docs/lakehouse.md`):

- ``sqlite:///PATH``          a SQL catalog in one SQLite file (the embedded default; created on use)
- ``postgresql://HOST/DB``    a SQL catalog in Postgres (``postgresql+psycopg2://`` etc. too)
- ``http://`` / ``https://``  an Iceberg REST catalog (Polaris, Nessie, Gravitino, Unity, Glue...)

The catalog is loaded through pyiceberg's ``load_catalog`` under the name ``longmem``, so pyiceberg's
own configuration applies on top: ``PYICEBERG_CATALOG__LONGMEM__TOKEN`` /
``__CREDENTIAL`` for a REST catalog, or a ``~/.pyiceberg.yaml`` entry. Secrets are never arguments
and never printed: every message goes through ``secrets.mask``, and the URI shown is ``safe_uri``.

The warehouse is a directory (made absolute, ``file://``) or ``s3://BUCKET/PREFIX``; for S3 the
files are written by pyarrow's S3 filesystem with the standard AWS chain (keys, session token,
profiles, instance roles) and the endpoint from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``
(MinIO, R2, Ceph). Only the endpoint and region are passed as properties; keys stay in the
environment, where pyarrow reads them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from longmem_etl.errors import BadInput

CATALOG_NAME = "longmem"
SQL_SCHEMES = ("sqlite", "postgresql", "postgres")


def safe_uri(uri: str) -> str:
    """``uri`` without user-info, password or query (fit for output and Dagster metadata)."""
    parts = urlsplit(uri)
    if not parts.netloc:  # sqlite:///PATH: nothing secret, keep it readable
        return uri.split("?", 1)[0]
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def catalog_kind(uri: str) -> str:
    """``sql`` or ``rest`` for a catalog URI; BadInput naming the URI otherwise."""
    scheme = urlsplit(uri).scheme.lower()
    base = scheme.split("+", 1)[0]
    if base in SQL_SCHEMES:
        return "sql"
    if base in ("http", "https"):
        return "rest"
    raise BadInput(
        f"--catalog {safe_uri(uri)!r}: not a catalog URI; use sqlite:///PATH, "
        "postgresql://HOST/DB or http(s)://REST-CATALOG"
    )


def sql_uri(uri: str) -> str:
    """The SQLAlchemy URL for a SQL catalog (``postgres://`` spelled as SQLAlchemy wants); a
    ``sqlite:///PATH`` gets its folder created and must not name a directory."""
    parts = urlsplit(uri)
    if parts.scheme.lower() == "postgres":
        return "postgresql" + uri[len("postgres") :]
    if parts.scheme.lower().startswith("sqlite"):
        raw = uri.split(":///", 1)[1] if ":///" in uri else ""
        if not raw or raw.startswith(":memory:"):
            raise BadInput(f"--catalog {uri!r}: name a file, e.g. sqlite:///lake/catalog.db")
        path = Path(raw if raw.startswith("/") else os.path.abspath(raw))
        if path.is_dir():
            raise BadInput(f"--catalog {uri!r}: {path} is a directory, not a SQLite file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"--catalog {uri!r}: cannot create {path.parent}: {exc}") from None
        return f"sqlite:///{path}"
    return uri


def warehouse_location(warehouse: str) -> str:
    """The warehouse as a location URI: ``s3://...`` as is, a directory as ``file:///ABS``."""
    if warehouse.startswith("s3://"):
        if not urlsplit(warehouse).netloc:
            raise BadInput(f"--warehouse {warehouse!r}: no bucket name (s3://BUCKET/PREFIX)")
        return warehouse.rstrip("/")
    if "://" in warehouse and not warehouse.startswith("file://"):
        raise BadInput(f"--warehouse {warehouse!r}: use a directory or s3://BUCKET/PREFIX")
    path = Path(warehouse.removeprefix("file://")).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise BadInput(f"--warehouse {path}: exists and is not a directory")
    return path.as_uri()


def s3_properties(environ: dict[str, str] | None = None) -> dict[str, str]:
    """pyiceberg FileIO properties for S3 from the AWS environment: endpoint and region only.

    pyarrow's S3 filesystem does not read ``AWS_ENDPOINT_URL`` itself, so it is passed on; keys,
    session tokens and profiles are left to pyarrow's AWS credential chain."""
    env = os.environ if environ is None else environ
    props: dict[str, str] = {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        props["s3.endpoint"] = endpoint
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        props["s3.region"] = region
    return props


def open_catalog(uri: str, warehouse: str) -> Any:
    """A pyiceberg catalog for ``uri`` writing new tables under ``warehouse``; BadInput (one line)
    when the URI is malformed or the catalog cannot be reached."""
    from longmem_etl.secrets import mask

    kind = catalog_kind(uri)
    props: dict[str, Any] = {"warehouse": warehouse_location(warehouse)}
    props.update(s3_properties())
    if kind == "sql":
        props.update(type="sql", uri=sql_uri(uri), init_catalog_tables="true")
    else:
        props.update(type="rest", uri=uri)
    try:
        from pyiceberg.catalog import load_catalog

        catalog = load_catalog(CATALOG_NAME, **props)
        catalog.list_namespaces()  # reach it now, so an unreachable catalog is one clear line
    except BadInput:
        raise
    except ImportError as exc:
        raise BadInput(f"--catalog {safe_uri(uri)}: missing driver ({exc.name or exc})") from None
    except Exception as exc:  # SQLAlchemy, HTTP and pyiceberg errors alike: user-fixable
        reason = mask(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise BadInput(f"--catalog {safe_uri(uri)}: cannot open the catalog: {reason}") from None
    return catalog
