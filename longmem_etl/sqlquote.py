"""Quoting for SQL we build ourselves (DuckDB; standard SQL rules), in one place.

Values are bound as parameters wherever DuckDB allows it; these are for the places it does not
(view definitions over file lists, compiled transform steps, identifiers).
"""

from __future__ import annotations

import os


def sql_str(value: str | os.PathLike[str]) -> str:
    """A SQL string literal: ``O'Brien`` -> ``'O''Brien'`` (a path is quoted as its text)."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_ident(name: str) -> str:
    '''A quoted identifier: my "col" becomes "my ""col""" in SQL.'''
    return '"' + name.replace('"', '""') + '"'
