"""``longmem-etl publish --root ROOT --catalog URI --warehouse PATH``: Iceberg tables kept in step
with a snapshot root (``longmem_etl.lakehouse.publish``; `docs/lakehouse.md`)."""

from __future__ import annotations

import argparse

from longmem_etl.cli.common import add_identity_flag, add_json_flag, add_verb, emit

VERB = "publish"
ORDER = 36

EXAMPLES = """\
  longmem-etl publish --root snapshots/ --catalog sqlite:///lake/catalog.db --warehouse lake/wh
  longmem-etl publish --root snapshots/ --catalog sqlite:///lake/catalog.db --warehouse lake/wh \\
      --namespace analytics.longmem --tenant acme --json
  AWS_ENDPOINT_URL=http://minio:9000 longmem-etl publish --root snapshots/ \\
      --catalog postgresql://iceberg@db/catalog --warehouse s3://lake/warehouse
  PYICEBERG_CATALOG__LONGMEM__TOKEN=... longmem-etl publish --root snapshots/ \\
      --catalog https://polaris.example.com/api/catalog --warehouse s3://lake/warehouse

Each snapshot not yet in the tables becomes one Iceberg append per table (NS.memories,
NS.collections, NS.rejected; rows carry tenant and snapshot; partitioned by tenant). Re-runs add
nothing; a killed run is resumed by running it again. Secrets only from the environment
(AWS chain for S3, PYICEBERG_CATALOG__LONGMEM__* for the catalog).

exit codes: 0 done (or nothing to do); 2 bad root, catalog URI, unreachable catalog, a table with a
foreign schema, a damaged snapshot, an encrypted snapshot without --identity; 130 interrupted
(run again to resume).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="append every not-yet-published snapshot to Apache Iceberg tables",
        description=(
            "Keep the Iceberg tables NS.memories, NS.collections and NS.rejected in step with "
            "--root: every committed snapshot the tables do not hold yet (its full state, also for "
            "increments and encrypted snapshots) becomes one append per table, recorded in the "
            "Iceberg snapshot's summary (longmem.tenant, longmem.snapshot), so the tables are "
            "their own journal. Catalogs: sqlite:///PATH (SQL catalog in one file), "
            "postgresql://... (SQL catalog), http(s)://... (REST catalog)."
        ),
        examples=EXAMPLES,
    )
    p.add_argument(
        "--root",
        required=True,
        metavar="ROOT",
        help="snapshot root: a directory or s3://BUCKET/PREFIX holding tenant=*/snapshot=*/",
    )
    p.add_argument(
        "--catalog",
        required=True,
        metavar="URI",
        help="sqlite:///PATH, postgresql://HOST/DB or http(s)://REST-CATALOG",
    )
    p.add_argument(
        "--warehouse",
        required=True,
        metavar="PATH",
        help="where new tables' files go: a directory or s3://BUCKET/PREFIX",
    )
    p.add_argument(
        "--namespace",
        default="longmem",
        metavar="NS",
        help="Iceberg namespace of the tables (default longmem; dots separate levels)",
    )
    p.add_argument("--tenant", help="publish only this tenant's snapshots (exact name)")
    add_identity_flag(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from longmem_etl.lakehouse.publish import publish

    result = publish(
        args.root, args.catalog, args.warehouse, namespace=args.namespace, tenant=args.tenant
    )
    emit(args, result.to_json(), result.render())
    return 0
