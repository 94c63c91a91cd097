"""``python -m pipelines.tenants [list | add T ... | sync]``: manage the ``tenants`` partitions.

Works on the instance in ``$DAGSTER_HOME`` (the same one ``dagster dev`` and the CLI use), so a
tenant can be added without a code change or the UI. ``sync`` adds the default tenants
(``$LONGMEM_ETL_TENANTS`` or the sample tenants). Names are exact (``東京``, ``a/b``); ``list``
prints each name, and its partition key after a tab when the two differ.
"""

from __future__ import annotations

import argparse
import sys

from dagster import DagsterInstance

from pipelines.partitions import register_tenants, tenant_of, tenants_partitions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.tenants", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="print the registered tenants")
    add = sub.add_parser("add", help="register tenants")
    add.add_argument("tenants", nargs="+")
    sub.add_parser("sync", help="register the default tenants")
    args = parser.parse_args(argv)
    with DagsterInstance.get() as instance:
        if args.cmd == "list":
            for key in instance.get_dynamic_partitions(tenants_partitions.name):
                name = tenant_of(key)
                print(name if name == key else f"{name}\t{key}")
            return 0
        added = register_tenants(instance, args.tenants if args.cmd == "add" else None)
        print("added: " + (", ".join(added) if added else "(none)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
