"""``longmem-etl keygen --out FILE``: a new age identity for encrypting snapshots."""

from __future__ import annotations

import argparse

from longmem_etl.cli.common import add_json_flag, add_verb, emit

VERB = "keygen"
ORDER = 85

EXAMPLES = """\
  longmem-etl keygen --out ~/.config/longmem-etl/acme.key      # prints age1...
  longmem-etl backup --source local:acme.db --root snapshots/ --encrypt-to age1...
  LONGMEM_ETL_IDENTITY_FILE=~/.config/longmem-etl/acme.key longmem-etl sql --root snapshots/ \\
      "SELECT count(*) FROM latest_memories"
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="write a new age identity (private key) for encrypted snapshots",
        description=(
            "Write a new age X25519 identity to FILE (mode 0600; an existing file is never "
            "overwritten) and print its recipient (public key, age1...). Give the recipient to "
            "backup/convert/clean --encrypt-to (or $LONGMEM_ETL_RECIPIENTS); readers need the "
            "identity file (--identity or $LONGMEM_ETL_IDENTITY_FILE). Deleting every copy of the "
            "identity makes the snapshots encrypted to it unreadable for good (crypto-shredding)."
        ),
        examples=EXAMPLES,
    )
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the identity")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from longmem_etl.snapshots.crypto import write_identity_file

    recipient = write_identity_file(args.out)
    emit(args, {"identity_file": args.out, "recipient": recipient}, recipient)
    return 0
