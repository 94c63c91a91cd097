"""Point-in-time restore: bring back into an account what a snapshot has and the account lacks.

A thin layer over the migration engine (``migrate.run_migration``), so a restore is resumable,
exactly-once and verified like any migration:

1. **Which snapshot.** A snapshot directory, or ``ROOT`` + ``tenant`` + ``as_of``: the newest snapshot
   of that tenant whose time (its name, UTC) is at or before the instant. Its files are checked
   (sizes and sha256) before anything is read.
2. **Which memories.** ``collections``, ``tags`` (container tags), an ids file and a ``where`` SQL
   expression select rows of the snapshot, in DuckDB with no file access beyond the snapshot's
   ``memories.parquet`` (``where`` must parse as one expression: ``duckdb.SQLExpression``).
3. **What the account already holds** (``held_by``): a target memory holds a snapshot memory when it has
   the same id, or carries the provenance marker ``metadata._longmem_etl.source_id`` naming it (what an
   earlier restore or migration left). Held memories are not sent again; memories the account gained
   since the snapshot are kept.
4. **Send the rest.** The missing rows are written as a *selection* snapshot in the restore's work dir
   and migrated (default ``--mode import``: fields kept, the store mints new ids). A killed restore
   resumes that migration's journal first, then looks again at what is still missing.
5. **Mirror.** With ``mirror``, target memories in scope (all, or the selected collections/tags) that
   hold no snapshot memory, and second copies of one, are deleted afterwards (deletes are idempotent:
   a memory already gone counts as deleted).
6. **Verify.** One more export: every selected snapshot memory must be held (what this restore sent:
   exactly once; with ``mirror``: everything exactly once and nothing else in scope). Exit 0 when
   exact, 3 when not, 130 when interrupted (run the same command again to continue).

Work dir: ``{state home}/restores/<restore_id>/`` (or ``work_dir``), ``restore_id`` hashing the
snapshot's manifest, the target identity, the filters and the mode (never the cwd): ``state.json``
names the pending selection, ``selection/`` holds it, ``migrations/`` the journals, ``lock`` the
one-run-at-a-time ``flock``. Being in the state home, a re-run from any directory finds a killed run's
pending selection and two runs started from two directories exclude each other. Older versions kept
it in ``./.longmem-etl/restores/<restore_id>/``: such a dir with a pending selection is found and used
(``work_dir_for``) when the state home has none for this restore.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from longmem_etl.api.keys import DEFAULT_KEY_ENV
from longmem_etl.errors import EXIT_INCOMPLETE, EXIT_OK, APIError, BadInput
from longmem_etl.sqlquote import sql_str
from longmem_etl.timestamps import to_datetime

LEGACY_WORK_ROOT = Path(".longmem-etl") / "restores"  # older versions: under the cwd
EXIT_INTERRUPTED = 130
EXAMPLES = 5
RESTORE_MODES = ("import", "add")


@dataclass
class RestoreOptions:
    """What ``restore`` takes. Keys are never options: only the name of the env var holding one."""

    target: str
    snapshot: str | None = None
    root: str | None = None
    tenant: str | None = None
    as_of: str | None = None
    collections: list[str] | None = None
    tags: list[str] | None = None
    ids_file: str | None = None
    where: str | None = None
    mirror: bool = False
    dry_run: bool = False
    mode: str = "import"
    concurrency: int = 4
    work_dir: str | None = None
    key_env: str = DEFAULT_KEY_ENV
    show_progress: bool = False


@dataclass
class RestorePlan:
    """What a restore would do to the account, from one export of it."""

    selected: int = 0
    held: int = 0
    add: list[str] = field(default_factory=list)
    remove: list[tuple[str, str]] = field(default_factory=list)  # (target id, collection)
    differ: list[str] = field(default_factory=list)

    def summary(self, n: int = EXAMPLES) -> dict[str, Any]:
        return {
            "selected": self.selected,
            "already_held": self.held,
            "add": len(self.add),
            "remove": len(self.remove),
            "differ": len(self.differ),
            "examples": {
                "add": self.add[:n],
                "remove": [t for t, _ in self.remove[:n]],
                "differ": self.differ[:n],
            },
        }


@dataclass
class RestoreResult:
    snapshot: str
    tenant: str
    dry_run: bool
    mirror: bool
    plan: dict[str, Any]
    added: int = 0
    removed: int = 0
    resumed_pending: bool = False
    interrupted: bool = False
    migration: dict[str, Any] | None = None
    verification: dict[str, Any] | None = None
    work_dir: str | None = None
    legacy_work_dir: bool = False  # an older version's ./.longmem-etl/restores/<id> was resumed
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.dry_run:
            return EXIT_OK
        return EXIT_OK if self.verification and self.verification["exact"] else EXIT_INCOMPLETE

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["exit_code"] = self.exit_code
        return out

    def render(self) -> str:
        """What ``longmem-etl restore`` prints on a terminal."""
        p = self.plan
        ex = p.get("examples", {})
        would = "would " if self.dry_run else ""
        lines = [f"snapshot {self.snapshot} (tenant {self.tenant})"]
        lines.append(
            f"  selected {p.get('selected', 0)}, already held {p.get('already_held', 0)}; "
            f"{would}add {p.get('add', 0)}, {would}remove {p.get('remove', 0)} "
            f"({'mirror' if self.mirror else 'not mirroring'}), differ {p.get('differ', 0)}"
        )
        for key in ("add", "remove", "differ"):
            if ex.get(key):
                lines.append(f"  e.g. {would}{key}: {', '.join(map(str, ex[key]))}")
        if self.dry_run:
            return "\n".join(lines)
        if self.legacy_work_dir:
            lines.append(
                f"  continued the pending restore an older version left in {self.work_dir} "
                "(new restores keep their state in the state home)"
            )
        lines.append(f"  added {self.added}, removed {self.removed} ({self.seconds:.1f}s)")
        if self.interrupted:
            lines.append("  interrupted: run the same command again to continue")
        elif self.verification:
            v = self.verification
            lines.append(
                "  verified: exact"
                if v["exact"]
                else f"  NOT exact: {v['missing']} missing, {v['duplicated']} duplicated, "
                f"{v.get('extra_in_scope') or 0} extra"
            )
        return "\n".join(lines)


# -- which snapshot --------------------------------------------------------------------------------


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant (``Z`` or an offset; none means UTC; a bare date is its 00:00 UTC), or a
    snapshot name's ``20261130T120000Z``."""
    s = str(text).strip()
    try:
        if len(s) == 16 and s[8] == "T" and s.endswith("Z"):
            t = datetime.strptime(s, "%Y%m%dT%H%M%SZ")
        else:
            t = to_datetime(s)
    except ValueError:
        raise BadInput(
            f"--as-of {text!r}: not a timestamp; use e.g. 2026-11-30T12:00:00Z or 2026-11-30"
        ) from None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def resolve_snapshot(opts: RestoreOptions) -> Path:
    """The snapshot to restore from (see the module docstring, step 1)."""
    from longmem_etl.snapshots.layout import list_snapshots, snapshot_time

    by_time = opts.root is not None or opts.tenant is not None or opts.as_of is not None
    if opts.snapshot is not None:
        if by_time:
            raise BadInput("give a SNAPSHOT, or --root with --tenant and --as-of; not both")
        path = Path(opts.snapshot).expanduser()
        if not (path / "manifest.json").is_file():
            raise BadInput(f"{opts.snapshot}: not a snapshot directory (no manifest.json)")
        return path.resolve()
    if not (opts.root and opts.tenant and opts.as_of):
        raise BadInput("restore needs a SNAPSHOT, or --root, --tenant and --as-of together")
    when = parse_instant(opts.as_of)
    if not Path(opts.root).is_dir():
        raise BadInput(f"--root {opts.root}: no such directory")
    snaps = list_snapshots(opts.root, opts.tenant)
    if not snaps:
        raise BadInput(f"--root {opts.root}: no snapshots of tenant {opts.tenant!r}")
    before = [s for s in snaps if (t := snapshot_time(s)) is not None and t <= when]
    if not before:
        raise BadInput(
            f"no snapshot of {opts.tenant!r} at or before {when:%Y-%m-%dT%H:%M:%SZ} "
            f"(the oldest is {snaps[0].name})"
        )
    return before[-1].resolve()


# -- which memories --------------------------------------------------------------------------------


def read_ids_file(path: str) -> list[str]:
    """One id per line (blank lines and ``#`` comments skipped), or a JSON list of strings."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"--ids {path}: no such file")
    text = p.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            ids = json.loads(text)
        except ValueError as exc:
            raise BadInput(f"--ids {path}: not a JSON list ({exc})") from None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise BadInput(f"--ids {path}: the JSON list must hold only strings")
        return ids
    return [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]


def check_where(expr: str) -> Any:
    """``--where`` as one DuckDB expression (never spliced into SQL text); BadInput otherwise."""
    import duckdb

    if not expr.strip():
        raise BadInput("--where: empty expression")
    try:
        return duckdb.SQLExpression(expr)
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise BadInput(f"--where {expr!r}: not one SQL expression ({first})") from None


def select_rows(snapshot: Path, opts: RestoreOptions) -> Any:
    """The snapshot's memories the filters select, as an Arrow table (snapshot schema).

    ``--where`` goes through ``transforms.sandbox`` like a spec's ``filter``: checked to be one
    expression naming no table, then run in a sandboxed session that can read only the snapshot."""
    import duckdb
    import pyarrow as pa

    from longmem_etl.transforms.sandbox import canonical_predicate, open_sandbox

    where = check_where(opts.where) if opts.where is not None else None
    ids = read_ids_file(opts.ids_file) if opts.ids_file else None
    from longmem_etl.snapshots import open_snapshot

    path = str(open_snapshot(snapshot, verify=False).memories_path)  # decrypted when encrypted
    # the same locked session a transform spec runs in: reads only this file, changes nothing
    con = open_sandbox([path])
    try:
        if where is not None:  # exactly one expression over the row's columns, no table named
            try:
                where = canonical_predicate(con, opts.where or "")
            except ValueError as exc:
                raise BadInput(f"--where {opts.where!r}: {exc}") from None
        conds = []
        for name, values, column in (
            ("sel_collections", opts.collections, "collection"),
            ("sel_tags", opts.tags, "container_tag"),
            ("sel_ids", ids, "id"),
        ):
            if values is not None:
                con.register(name, pa.table({"v": pa.array(list(values), pa.string())}))
                conds.append(f"{column} IN (SELECT v FROM {name})")
        sql = f"SELECT * FROM read_parquet({sql_str(path)})"
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        rel = con.sql(sql)
        try:
            if where is not None:
                rel = rel.filter(where)
            return rel.to_arrow_table()
        except duckdb.Error as exc:
            first = str(exc).splitlines()[0]
            raise BadInput(f"--where {opts.where!r}: {first}") from None
    finally:
        con.close()


# -- what the account holds ------------------------------------------------------------------------


def held_by(snapshot_ids: set[str], target_memories: Iterable[dict[str, Any]]) -> dict[str, list]:
    """``{snapshot id: [target memories holding it]}``: same id, or a provenance marker naming it.

    The one place restore decides "already there"; a target memory holding a snapshot memory both
    ways is listed once. The same-id holder comes first."""
    from longmem_etl.migrate.keys import marker_of

    out: dict[str, list] = {}
    for m in target_memories:
        tid = m.get("id")
        tid = None if tid is None else str(tid)
        sid, _mig = marker_of(m.get("metadata"))
        if tid is not None and tid in snapshot_ids:
            out.setdefault(tid, []).insert(0, m)
        if sid is not None and sid != tid and sid in snapshot_ids:
            out.setdefault(sid, []).append(m)
    return out


def _in_scope(m: dict[str, Any], opts: RestoreOptions) -> bool:
    coll = m.get("collection") or "default"
    if opts.collections is not None and coll not in opts.collections:
        return False
    return opts.tags is None or m.get("container_tag") in opts.tags


def plan_restore(rows: Any, target_memories: list[dict[str, Any]], opts: RestoreOptions):
    """Compare the selected rows with one export of the target (steps 3 and 5).

    A held memory *differs* when none of its holders has the snapshot's content (collection,
    container tag, normalised text). By default it is left alone (and reported); with ``mirror``
    its holders are deleted and the snapshot's version is sent, so the account ends equal."""
    from longmem_etl.migrate.keys import fingerprint

    def fp(m: dict[str, Any]) -> str:
        return fingerprint(m.get("collection") or "default", m.get("container_tag"), m.get("text"))

    ids = rows.column("id").to_pylist()
    colls = rows.column("collection").to_pylist()
    tags = rows.column("container_tag").to_pylist()
    texts = rows.column("text").to_pylist()
    holders = held_by(set(ids), target_memories)
    plan = RestorePlan(selected=len(ids))
    keep: set[int] = set()  # id() of the one holder kept per snapshot memory
    for sid, coll, tag, text in zip(ids, colls, tags, texts, strict=True):
        hs = holders.get(sid)
        if not hs:
            plan.add.append(sid)
            continue
        plan.held += 1
        want = fingerprint(coll or "default", tag, text)
        same = next((h for h in hs if fp(h) == want), None)
        if same is not None:
            keep.add(id(same))
            continue
        plan.differ.append(sid)
        if opts.mirror:
            plan.add.append(sid)
    if opts.mirror:
        holding = {id(h) for hs in holders.values() for h in hs}
        for m in target_memories:
            if id(m) in keep or (id(m) not in holding and not _in_scope(m, opts)):
                continue
            plan.remove.append((str(m.get("id")), str(m.get("collection") or "default")))
    return plan, holders


# -- doing it --------------------------------------------------------------------------------------


def restore_id_of(snapshot: Path, opts: RestoreOptions) -> str:
    from longmem_etl.migrate.source import target_identity
    from longmem_etl.snapshots.manifest import file_digest

    ids_sha = file_digest(opts.ids_file)[0] if opts.ids_file else None
    binding = {
        "snapshot": file_digest(snapshot / "manifest.json")[0],
        "target": target_identity(opts.target, key_env=opts.key_env),
        "filters": [opts.collections, opts.tags, ids_sha, opts.where],
        "mode": opts.mode,
        "mirror": opts.mirror,
    }
    return hashlib.sha256(json.dumps(binding, sort_keys=True).encode()).hexdigest()[:16]


def work_dir_for(rid: str) -> tuple[Path, bool]:
    """Where restore ``rid`` keeps its state, and whether that is an older version's dir in the cwd.

    The state home's ``restores/<rid>/`` unless it does not exist and ``./.longmem-etl/restores/<rid>/``
    holds a pending selection (a run of an older version killed mid-way): that one is used as it is,
    so its journal is resumed instead of the account being planned against again."""
    from longmem_etl.home import state_home

    home = state_home() / "restores" / rid
    legacy = LEGACY_WORK_ROOT.absolute() / rid
    if not home.exists() and (legacy / "state.json").is_file():
        return legacy, True
    return home, False


def _migrate(selection: Path, opts: RestoreOptions, work: Path, stop: threading.Event):
    from longmem_etl.migrate import MigrationOptions, run_migration

    return run_migration(
        MigrationOptions(
            source=str(selection),
            target=opts.target,
            mode=opts.mode,
            concurrency=opts.concurrency,
            work_root=str(work / "migrations"),
            target_key_env=opts.key_env,
            show_progress=opts.show_progress,
        ),
        stop=stop,
    )


def _write_selection(snapshot: Path, rows: Any, add: list[str], work: Path) -> Path:
    import pyarrow as pa
    import pyarrow.compute as pc

    from longmem_etl.snapshots import SnapshotWriter, open_snapshot

    snap = open_snapshot(snapshot, verify=False)
    picked = rows.filter(pc.is_in(rows.column("id"), value_set=pa.array(add, pa.string())))
    dest = work / "selection"
    shutil.rmtree(dest, ignore_errors=True)
    with SnapshotWriter(
        dest,
        snap.tenant,
        source={"kind": "restore-selection", "snapshot": str(snapshot)},
        parent=snapshot,
        exported_at=snap.manifest.get("exported_at"),
    ) as writer:
        writer.set_header(snap.header())
        writer.set_collections(snap.collections() if snap.has_collections else None)
        writer.write_memories(picked)
    assert writer.path is not None
    return writer.path


_HELD_LOCKS: dict[str, int] = {}


def _lock_work(work: Path) -> None:
    """One restore per work dir: a second identical restore running at once would plan the same
    missing memories. The flock is dropped when the process ends (or ``_unlock_work``)."""
    import fcntl

    fd = os.open(work / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BadInput(
            f"{work}: the same restore is already running (its lock is held); wait for it, "
            "or run this command again afterwards"
        ) from None
    _HELD_LOCKS[str(work)] = fd


def _unlock_work(work: Path) -> None:
    fd = _HELD_LOCKS.pop(str(work), None)
    if fd is not None:
        os.close(fd)


def _load_state(work: Path) -> dict[str, Any]:
    """The pending selection, or ``{}``: none, or ``state.json`` unreadable (truncated by a crash,
    edited by hand). Ignoring it is safe: the account is exported and planned against again, and
    what the pending run landed carries the provenance marker, so it counts as held."""
    try:
        state = json.loads((work / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    sel = state.get("selection") if isinstance(state, dict) else None
    return state if isinstance(sel, str) and isinstance(state.get("ids", []), list) else {}


def _save_state(work: Path, state: dict[str, Any] | None) -> None:
    path = work / "state.json"
    if state is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name("state.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(state))
        f.flush()
        os.fsync(f.fileno())  # on disk before it is the state (a crash cannot leave it empty)
    os.replace(tmp, path)


def _delete_all(
    api: Any, victims: list[tuple[str, str]], stop: threading.Event, attempts: int = 6
) -> int:
    """Delete each target memory; already gone counts as done; retry 429/5xx. Returns how many."""
    done = 0
    for tid, coll in victims:
        if stop.is_set():
            break
        for attempt in range(attempts):
            try:
                api.delete(tid, collection=coll)
                break
            except APIError as exc:
                if exc.status == 404:
                    break
                if not exc.retryable or attempt == attempts - 1:
                    raise
                time.sleep(min(exc.retry_after or 0.1 * 2**attempt, 10.0))
        done += 1
    return done


def _verify(rows: Any, target_memories: list, opts: RestoreOptions, sent: set[str]) -> dict:
    """Every selected memory held; what this restore sent held once; with mirror, each held once
    and nothing else in scope."""
    plan, holders = plan_restore(rows, target_memories, opts)
    twice = sorted(s for s, hs in holders.items() if len(hs) > 1 and (opts.mirror or s in sent))
    holding = {id(h) for hs in holders.values() for h in hs}
    extra = [m for m in target_memories if id(m) not in holding and _in_scope(m, opts)]
    return {
        "exact": not plan.add and not twice and not (opts.mirror and extra),
        "selected": plan.selected,
        "missing": len(plan.add),
        "duplicated": len(twice),
        "extra_in_scope": len(extra) if opts.mirror else None,
        "target_memories": len(target_memories),
        "examples": {"missing": plan.add[:EXAMPLES], "duplicated": twice[:EXAMPLES]},
    }


def restore(
    opts: RestoreOptions,
    *,
    stop: threading.Event | None = None,
    before_remove: Callable[[int], bool] | None = None,
) -> RestoreResult:
    """Run (or continue) a restore; see the module docstring. ``before_remove(n)`` is asked before
    ``mirror`` deletes ``n`` memories (the CLI shows the count there); False skips the deletes."""
    try:
        return _restore(opts, stop=stop, before_remove=before_remove)
    finally:
        for work in list(_HELD_LOCKS):
            _unlock_work(Path(work))


def _restore(
    opts: RestoreOptions,
    *,
    stop: threading.Event | None = None,
    before_remove: Callable[[int], bool] | None = None,
) -> RestoreResult:
    """The body of ``restore`` (which releases the work-dir lock however this ends)."""
    from longmem_etl.migrate.reconcile import export_target
    from longmem_etl.migrate.source import open_target
    from longmem_etl.snapshots import open_snapshot

    started = time.monotonic()
    stop = stop or threading.Event()
    if opts.mode not in RESTORE_MODES:
        raise BadInput(f"--mode {opts.mode!r}: must be one of {', '.join(RESTORE_MODES)}")
    if opts.mirror and (opts.ids_file or opts.where):
        raise BadInput(
            "--mirror with --ids or --where: memories the snapshot does not have cannot be "
            "matched against them; mirror whole collections (--collections/--tags) instead"
        )
    snapshot = resolve_snapshot(opts)
    snap = open_snapshot(snapshot, verify=True)  # damaged files: BadInput naming the file
    rows = select_rows(snapshot, opts)
    api = open_target(opts.target, key_env=opts.key_env, create=not opts.dry_run)
    result = RestoreResult(
        snapshot=str(snapshot),
        tenant=snap.tenant,
        dry_run=opts.dry_run,
        mirror=opts.mirror,
        plan={},
    )
    work = None
    if not opts.dry_run:
        rid = restore_id_of(snapshot, opts)
        if opts.work_dir:
            work = Path(opts.work_dir).expanduser().absolute()
        else:
            work, result.legacy_work_dir = work_dir_for(rid)
        work.mkdir(parents=True, exist_ok=True)
        result.work_dir = str(work)
        _lock_work(work)
        pending = _load_state(work)
        sel = pending.get("selection")
        if sel and (Path(sel) / "manifest.json").is_file():
            # a killed run's migration: finish it through its journal before looking again
            result.resumed_pending = True
            mig = _migrate(Path(sel), opts, work, stop)
            result.migration = mig.as_dict()
            if mig.interrupted:
                result.interrupted = True
                return result
            result.added += int(mig.counts.get("items_done", 0))
            sent_before = set(pending.get("ids") or [])
        else:
            sent_before = set()
        _save_state(work, None)
        shutil.rmtree(work / "selection", ignore_errors=True)
    else:
        sent_before = set()
    target_memories = export_target(api, stop=stop).get("memories") or []
    plan, _ = plan_restore(rows, target_memories, opts)
    result.plan = plan.summary()
    if opts.dry_run:
        result.seconds = round(time.monotonic() - started, 3)
        return result
    assert work is not None
    sent = set(sent_before) | set(plan.add)
    if plan.add:
        selection = _write_selection(snapshot, rows, plan.add, work)
        _save_state(work, {"selection": str(selection), "ids": sorted(sent)})
        mig = _migrate(selection, opts, work, stop)
        result.migration = mig.as_dict()
        if mig.interrupted:
            result.interrupted = True
            return result
        result.added += int(mig.counts.get("items_done", 0))
        _save_state(work, None)
        shutil.rmtree(work / "selection", ignore_errors=True)
    confirmed = opts.mirror and plan.remove and not stop.is_set()
    if confirmed and (before_remove is None or before_remove(len(plan.remove))):
        result.removed = _delete_all(api, plan.remove, stop)
    if stop.is_set():
        result.interrupted = True
        return result
    after = export_target(api, stop=stop).get("memories") or []
    result.verification = _verify(rows, after, opts, sent)
    result.seconds = round(time.monotonic() - started, 3)
    return result
