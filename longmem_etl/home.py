"""The state home: the one directory the CLI, the library and the Dagster layer keep state under.

``$LONGMEM_ETL_HOME`` if set, else the platform's user state directory (``~/.local/state/longmem-etl``
on Linux, via platformdirs). Migrations, their locks and repairs live under it
(``migrate.state``); the Dagster defaults put their offline tenants, snapshots and warehouses there
(``pipelines.resources.render``'s ``{home}``). One function, so a CLI run and a Dagster run on the
same machine see the same state whatever directory each was started from.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "LONGMEM_ETL_HOME"


def state_home() -> Path:
    """The absolute state directory (not created here)."""
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_state_dir("longmem-etl", appauthor=False)).absolute()
