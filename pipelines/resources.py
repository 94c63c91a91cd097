"""Shared Dagster resources: where tenants live, where snapshots go, where the warehouse is.

Every value is a *template* resolved at run time, so one set of definitions serves every tenant and
every deployment:

- ``{home}``   the state home, the same as the CLI's (``longmem_etl.home.state_home``:
  ``$LONGMEM_ETL_HOME``, else the platform's user state directory);
- ``{tenant}`` the run's tenant partition key.

Each field can be set per deployment through an environment variable (see ``docs/dagster.md``). When
the variable is set the field is bound with ``EnvVar`` (resolved in the run worker, shown as such in
the UI, never baked into the definitions); when it is not, the offline default points at embedded
``local:`` tenants under ``{home}`` seeded from ``sample_data`` on first use. Keys are never a field:
``key_env_var`` holds the *name* of the variable, read by ``open_endpoint`` inside the library.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from dagster import ConfigurableResource, EnvVar

from longmem_etl.api.keys import DEFAULT_KEY_ENV
from longmem_etl.home import state_home

DEFAULT_SOURCE_URI = "local:{home}/tenants/{tenant}.sqlite"
DEFAULT_TARGET_URI = "local:{home}/targets/{tenant}.sqlite"
DEFAULT_ROOT = "{home}/snapshots"
DEFAULT_CLEAN_ROOT = "{home}/clean"
DEFAULT_WAREHOUSE = "{home}/warehouse/{tenant}.duckdb"
DEFAULT_ICEBERG_CATALOG = "sqlite:///{home}/iceberg/catalog.db"
DEFAULT_ICEBERG_WAREHOUSE = "{home}/iceberg/warehouse"
DEFAULT_ICEBERG_NAMESPACE = "longmem"


def render(template: str, tenant: str | None = None) -> str:
    """Fill ``{home}`` and ``{tenant}`` in a template (other text is left alone).

    The tenant goes through the snapshot layout's ``encode_tenant`` (percent encoding, one safe
    path segment, distinct for distinct names: ``../x`` becomes ``..%2Fx``, ``Acme`` ``%41cme``),
    so a tenant can never step out of its directory nor share a store with another tenant."""
    from longmem_etl.snapshots.layout import encode_tenant

    out = template.replace("{home}", str(state_home()))
    if tenant is not None:  # one safe path segment, as in the snapshot layout
        out = out.replace("{tenant}", encode_tenant(tenant))
    return out


_PLAIN_ENV = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")


def env_name(tenant: str) -> str:
    """The tenant as part of an environment variable name, distinct for distinct tenants (two
    tenants must never read one key). Plain lowercase names stay readable: upper-cased, ``-``
    becomes ``_`` and ``_`` becomes ``__`` (``globex-eu`` -> ``GLOBEX_EU``, ``globex_eu`` ->
    ``GLOBEX__EU``); any other name (``Acme``, ``a/b``, ``東京``) becomes ``_`` + the hex of its
    UTF-8 bytes, which a plain name (never starting with ``_``) cannot spell."""
    if _PLAIN_ENV.match(tenant):
        return tenant.replace("_", "__").replace("-", "_").upper()
    return "_" + tenant.encode("utf-8", "surrogatepass").hex().upper()


_SECRET_PARAM = re.compile(r"key|token|secret|passw|auth", re.IGNORECASE)


def safe_uri(uri: str) -> str:
    """The URI without user-info or secret-looking query parameters: fit for logs and metadata."""
    if uri.startswith("local:") or "://" not in uri:
        base, _, query = uri.partition("?")
        kept = [(k, v) for k, v in parse_qsl(query) if not _SECRET_PARAM.search(k)]
        return base + ("?" + urlencode(kept) if kept else "")
    parts = urlsplit(uri)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    kept = [(k, v) for k, v in parse_qsl(parts.query) if not _SECRET_PARAM.search(k)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(kept), ""))


def env_or(var: str, default: str) -> Any:
    """``EnvVar(var)`` when the deployment sets ``var``, else the offline ``default``."""
    return EnvVar(var) if os.environ.get(var) else default


class LongmemEndpoint(ConfigurableResource):
    """A Longmem endpoint per tenant: a URI template and the *name* of the env var holding its key.

    With ``seed_from_sample_data``, a ``local:`` URI whose SQLite file does not exist yet is seeded
    from the tenant's sample dump (``SAMPLE_TENANTS``, else ``longmem_etl/sample_data/<tenant>.json``) when
    there is one (idempotent), so the offline default has data to back up. A tenant with neither a
    store nor a sample fails clearly in the library (``no such local store``).
    """

    uri_template: str = DEFAULT_SOURCE_URI
    key_env_var: str = DEFAULT_KEY_ENV
    seed_from_sample_data: bool = True

    def uri(self, tenant: str) -> str:
        return render(self.uri_template, tenant)

    def key_env(self, tenant: str) -> str:
        """The key variable's name for this tenant (``{tenant}``: see :func:`env_name`)."""
        return self.key_env_var.replace("{tenant}", env_name(tenant))

    def display_uri(self, tenant: str) -> str:
        return safe_uri(self.uri(tenant))

    def prepare(self, tenant: str) -> str:
        """The tenant's URI, after seeding an embedded tenant from sample data if it is missing."""
        uri = self.uri(tenant)
        if self.seed_from_sample_data:
            from pipelines.seeding import seed_local_tenant

            seed_local_tenant(uri, tenant)
        return uri


class SnapshotRoot(ConfigurableResource):
    """A snapshot root directory (``ROOT/tenant=<t>/snapshot=<ts>/``); local path or shared mount.

    Encryption at rest: snapshots written here are age-encrypted to ``encrypt_to_by_tenant[tenant]``
    when the tenant has an entry, else to ``encrypt_to``, else to ``$LONGMEM_ETL_RECIPIENTS`` (public
    keys only; readers in the run worker need ``$LONGMEM_ETL_IDENTITY_FILE``). Per-tenant keys make
    crypto-shredding one tenant possible: delete its identity.
    """

    path: str = DEFAULT_ROOT
    encrypt_to: list[str] = []
    encrypt_to_by_tenant: dict[str, list[str]] = {}

    def recipients(self, tenant: str) -> list[Any]:
        """The parsed recipients for ``tenant`` (empty: write plain snapshots)."""
        from longmem_etl.snapshots.crypto import parse_recipients

        return parse_recipients(self.encrypt_to_by_tenant.get(tenant) or self.encrypt_to)

    def location(self) -> str:
        """The rendered root: a local path or ``s3://BUCKET/PREFIX``."""
        return render(self.path)

    @property
    def remote(self) -> bool:
        from longmem_etl.storage import is_remote

        return is_remote(self.location())

    def root(self) -> Path:
        """The local root directory (created); an ``s3://`` root is used through :meth:`staged`."""
        if self.remote:
            from longmem_etl.errors import BadInput

            raise BadInput(
                f"{self.location()}: an s3:// root is used through SnapshotRoot.staged()"
            )
        p = Path(self.location())
        p.mkdir(parents=True, exist_ok=True)
        return p

    @contextlib.contextmanager
    def staged(
        self, tenant: str | None = None, *, write: bool = False, snapshots: Sequence[Any] = ()
    ) -> Iterator[tuple[Path, list[Any]]]:
        """(Context) the root and ``snapshots`` as local paths, the same library call the CLI
        verbs use (``storage.staging.staged``): on an ``s3://`` root the tenant's snapshots are
        mirrored privately and, with ``write``, what the asset committed is published back."""
        from longmem_etl.storage.staging import staged

        where = self.location() if self.remote else str(self.root())
        snaps = [str(s) if s is not None else None for s in snapshots]
        with staged(where, snaps, write=write, tenant=tenant) as (root, out):
            yield Path(str(root)), [Path(s) if s is not None else None for s in out]


class WarehouseResource(ConfigurableResource):
    """One DuckDB file per tenant (``{tenant}`` in the path) holding views over the snapshots.

    One file per tenant keeps DuckDB's one-writer-per-file rule under the multiprocess executor.
    """

    database: str = DEFAULT_WAREHOUSE

    def database_path(self, tenant: str) -> Path:
        p = Path(render(self.database, tenant))
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


class IcebergCatalog(ConfigurableResource):
    """Where the lakehouse domain's ``iceberg_tables`` publishes (`docs/lakehouse.md`): an Iceberg
    catalog URI (``sqlite:///``, ``postgresql://``, ``https://`` REST), a warehouse (directory or
    ``s3://BUCKET/PREFIX``) and the namespace of the backup tables (cleaned ones go to
    ``<namespace>_clean``). Offline default: a SQLite catalog and a warehouse under ``{home}/iceberg``.

    Credentials are never fields: S3 keys come from the AWS chain, a REST catalog's token or
    credential from ``PYICEBERG_CATALOG__LONGMEM__TOKEN`` / ``__CREDENTIAL`` (read by pyiceberg in
    the run worker), a Postgres password from ``PGPASSFILE``."""

    catalog: str = DEFAULT_ICEBERG_CATALOG
    warehouse: str = DEFAULT_ICEBERG_WAREHOUSE
    namespace: str = DEFAULT_ICEBERG_NAMESPACE

    def catalog_uri(self) -> str:
        return render(self.catalog)

    def warehouse_path(self) -> str:
        return render(self.warehouse)

    def display_catalog(self) -> str:
        """The catalog URI without user-info or query: fit for metadata."""
        from longmem_etl.lakehouse.catalog import safe_uri

        return safe_uri(self.catalog_uri())


def default_resources() -> dict[str, Any]:
    """The resources ``pipelines.defs`` binds: offline defaults, overridable by env vars."""
    return {
        "source": LongmemEndpoint(
            uri_template=env_or("LONGMEM_ETL_SOURCE_URI", DEFAULT_SOURCE_URI),
            key_env_var=env_or("LONGMEM_ETL_SOURCE_KEY_ENV", DEFAULT_KEY_ENV),
        ),
        "target": LongmemEndpoint(
            uri_template=env_or("LONGMEM_ETL_TARGET_URI", DEFAULT_TARGET_URI),
            key_env_var=env_or("LONGMEM_ETL_TARGET_KEY_ENV", DEFAULT_KEY_ENV),
            seed_from_sample_data=False,
        ),
        "snapshot_root": SnapshotRoot(path=env_or("LONGMEM_ETL_ROOT", DEFAULT_ROOT)),
        "clean_root": SnapshotRoot(path=env_or("LONGMEM_ETL_CLEAN_ROOT", DEFAULT_CLEAN_ROOT)),
        "warehouse": WarehouseResource(database=env_or("LONGMEM_ETL_WAREHOUSE", DEFAULT_WAREHOUSE)),
        "iceberg": IcebergCatalog(
            catalog=env_or("LONGMEM_ETL_ICEBERG_CATALOG", DEFAULT_ICEBERG_CATALOG),
            warehouse=env_or("LONGMEM_ETL_ICEBERG_WAREHOUSE", DEFAULT_ICEBERG_WAREHOUSE),
            namespace=env_or("LONGMEM_ETL_ICEBERG_NAMESPACE", DEFAULT_ICEBERG_NAMESPACE),
        ),
    }
