"""The `longmem-etl` command: one module per verb, each a thin face over library calls.

A verb module defines ``VERB`` (its name), ``ORDER`` (position in ``--help``), ``register(subparsers)``
which adds its parser and sets ``func=run``, and ``run(args) -> int``. `main` discovers them, so adding
a verb never touches another verb's file.
"""
