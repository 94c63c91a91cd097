"""`run_migration`: freeze the source, plan, journal, upload, reconcile, verify — resumably.

One call does the whole migration story (`docs/migration.md`); the CLI and the Dagster assets are thin wrappers over it.

Layout of a migration's working directory (default ``.longmem-etl/migrations/<migration_id>/``, or
the directory holding ``--journal PATH``)::

    journal.sqlite      the checkpoint (see `journal`)
    frozen/             the source frozen as a snapshot on the first run (+ cleaned/ with --spec)
    id_map.parquet      source_id, target_id, collection, container_tag, chunk, state
    dead_letter.jsonl   items the target refused: {source_id, collection, status, message, item}
    verification.json   the final comparison (see `verify`)

``migration_id`` hashes the source identity, the spec's sha256, the target identity and the mode
(and whether provenance markers are on), so the same command always finds the same journal.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from longmem_etl.api.keys import DEFAULT_KEY_ENV
from longmem_etl.errors import EXIT_INCOMPLETE, EXIT_OK, BadInput, LongmemETLError
from longmem_etl.migrate import source as sources
from longmem_etl.migrate.journal import Journal, is_journal
from longmem_etl.migrate.plan import (
    DEFAULT_MAX_BYTES,
    MAX_CHUNK_ITEMS,
    MODES,
    PlanSummary,
    plan_items,
    summarise,
)
from longmem_etl.migrate.reconcile import Interrupted, export_target
from longmem_etl.migrate.uploader import Uploader, make_sender
from longmem_etl.migrate.verify import VerificationReport, compare, target_keys
from longmem_etl.progress import progress

DEFAULT_WORK_ROOT = Path(".longmem-etl") / "migrations"
JOURNAL_NAME = "journal.sqlite"
EXIT_INTERRUPTED = 130
OUTPUT_FILES = ("id_map.parquet", "dead_letter.jsonl", "verification.json")


@dataclass
class MigrationOptions:
    """Everything `migrate` takes. Keys are never options: only the names of env vars holding them."""

    source: str
    target: str
    mode: str = "add"
    spec: str | None = None
    concurrency: int = 4
    chunk_size: int = MAX_CHUNK_ITEMS
    max_bytes: int = DEFAULT_MAX_BYTES
    journal: str | None = None
    restart: bool = False
    dry_run: bool = False
    provenance: bool = True
    source_key_env: str = DEFAULT_KEY_ENV
    target_key_env: str = DEFAULT_KEY_ENV
    work_root: str | None = None
    max_attempts: int = 5
    settle_timeout: float = 30.0
    show_progress: bool = True


@dataclass
class MigrationResult:
    migration_id: str
    work_dir: str | None
    journal: str | None
    dry_run: bool = False
    resumed: bool = False
    interrupted: bool = False
    plan: dict[str, Any] | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    upload: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] | None = None
    dead_letters: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    resume_command: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.dry_run:
            return EXIT_OK
        exact = bool(self.verification and self.verification.get("exact"))
        return EXIT_OK if exact and self.dead_letters == 0 else EXIT_INCOMPLETE

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["exit_code"] = self.exit_code
        return out

    to_json = as_dict  # the name every result object shares (``longmem_etl`` public API)

    def render(self) -> str:
        """What ``longmem-etl migrate`` prints on a terminal (a dry run: the plan's summary)."""
        if self.dry_run:
            plan = self.plan or {}
            summary = PlanSummary(
                mode=plan["mode"],
                chunk_size=plan["chunk_size"],
                max_bytes=plan["max_bytes"],
                collections=plan["collections"],
            )
            return (
                f"dry run (migration {self.migration_id}): nothing written, no target call\n"
                + summary.render()
            )
        c, up = self.counts, self.upload
        if self.interrupted:
            return (
                f"interrupted — {c.get('items_done', 0)}/{c.get('items_total', 0)} items done, "
                f"journal flushed ({self.journal}).\nresume with: {self.resume_command}"
            )
        lines = [
            f"migration {self.migration_id} ({'resumed' if self.resumed else 'new'}): "
            f"{c['items_done']}/{c['items_total']} items landed in {c['chunks_total']} chunks, "
            f"{c['items_dead']} dead-lettered, {self.seconds:.1f}s",
            f"calls {up['calls']}, 429s {up['rate_limited']}, transient errors {up['transient_errors']}, "
            f"ambiguous {up['ambiguous']} (reconciled {up['reconciled_items']} items), "
            f"bisections {up['bisections']}, concurrency low {up['concurrency_lowest']}/{up['concurrency_max']}",
        ]
        ver = self.verification or {}
        t = ver.get("totals", {})
        lines.append(
            f"verification: {'EXACT' if ver.get('exact') else 'MISMATCH'} — missing {t.get('missing')}, "
            f"duplicated {t.get('duplicated')}, extra {t.get('extra')}"
        )
        for name, path in self.outputs.items():
            lines.append(f"  {name}: {path}")
        if self.dead_letters:
            lines.append(
                f"{self.dead_letters} item(s) refused by the target: see {self.outputs.get('dead_letter')}"
            )
        return "\n".join(lines)


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _validate(opts: MigrationOptions) -> None:
    if opts.mode not in MODES:
        raise BadInput(f"--mode {opts.mode!r}: must be one of {', '.join(MODES)}")
    if not 1 <= opts.chunk_size <= MAX_CHUNK_ITEMS:
        raise BadInput(f"--chunk-size {opts.chunk_size}: must be between 1 and {MAX_CHUNK_ITEMS}")
    if not 1 <= opts.concurrency <= 64:
        raise BadInput(f"--concurrency {opts.concurrency}: must be between 1 and 64")
    if opts.spec is not None and not Path(opts.spec).is_file():
        raise BadInput(f"{opts.spec}: no such spec file")


def binding_of(opts: MigrationOptions) -> dict[str, Any]:
    """What the journal is bound to: identities only, never secrets."""
    spec_sha = hashlib.sha256(Path(opts.spec).read_bytes()).hexdigest() if opts.spec else None
    source = sources.source_identity(opts.source, key_env=opts.source_key_env)
    target = sources.target_identity(opts.target, key_env=opts.target_key_env)
    if {k: v for k, v in source.items() if k != "kind"} == target:
        raise BadInput(
            f"--source and --target are the same account ({opts.target}); nothing to migrate"
        )
    return {
        "source": source,
        "spec": spec_sha,
        "target": target,
        "mode": {"mode": opts.mode, "provenance": opts.provenance},
    }


def migration_id_of(binding: dict[str, Any]) -> str:
    return _sha(binding)[:16]


def resume_command(opts: MigrationOptions, journal_path: Path | None = None) -> str:
    """The exact command that continues this migration."""
    parts = ["longmem-etl", "migrate", "--source", opts.source, "--target", opts.target]
    if opts.mode != "add":
        parts += ["--mode", opts.mode]
    if opts.spec:
        parts += ["--spec", opts.spec]
    if opts.concurrency != 4:
        parts += ["--concurrency", str(opts.concurrency)]
    if opts.chunk_size != MAX_CHUNK_ITEMS:
        parts += ["--chunk-size", str(opts.chunk_size)]
    if opts.journal:
        parts += ["--journal", str(opts.journal)]
    if not opts.provenance:
        parts.append("--no-provenance")
    if opts.source_key_env != DEFAULT_KEY_ENV:
        parts += ["--source-key-env", opts.source_key_env]
    if opts.target_key_env != DEFAULT_KEY_ENV:
        parts += ["--target-key-env", opts.target_key_env]
    return shlex.join(parts)


def _discard(work_dir: Path, journal_path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(journal_path) + suffix)
        if p.exists():
            p.unlink()
    for name in ("frozen",):
        shutil.rmtree(work_dir / name, ignore_errors=True)
    for name in OUTPUT_FILES:
        (work_dir / name).unlink(missing_ok=True)


def dry_run(opts: MigrationOptions) -> MigrationResult:
    """Plan without touching anything: no journal, no work dir, no target call."""
    _validate(opts)
    sources.check_target_uri(opts.target)
    binding = binding_of(opts)
    mid = migration_id_of(binding)
    with sources.frozen_temporarily(
        opts.source, spec=opts.spec, key_env=opts.source_key_env
    ) as frozen:
        summary = summarise(
            plan_items(
                frozen.memories(), mode=opts.mode, migration_id=mid, provenance=opts.provenance
            ),
            mode=opts.mode,
            chunk_size=opts.chunk_size,
            max_bytes=opts.max_bytes,
        )
    return MigrationResult(
        migration_id=mid, work_dir=None, journal=None, dry_run=True, plan=summary.as_dict()
    )


def run_migration(
    opts: MigrationOptions, *, stop: threading.Event | None = None
) -> MigrationResult:
    """Run (or resume) a migration to the end, or until ``stop`` is set. See the module docstring.

    Returns a result whose ``exit_code`` is 0 only when verification is exact and nothing was
    dead-lettered, 3 otherwise, 130 when stopped (the journal is consistent; run again to resume).
    """
    if opts.dry_run:
        return dry_run(opts)
    _validate(opts)
    started = time.monotonic()
    stop = stop or threading.Event()
    binding = binding_of(opts)
    mid = migration_id_of(binding)
    root = Path(opts.work_root) if opts.work_root else DEFAULT_WORK_ROOT
    journal_path = (Path(opts.journal) if opts.journal else root / mid / JOURNAL_NAME).absolute()
    work_dir = journal_path.parent
    if journal_path.exists() and not is_journal(journal_path):
        raise BadInput(
            f"--journal {journal_path}: exists and is not a migration journal; not touching it"
        )
    if opts.restart:
        # --restart over an earlier run of the same migration: what it already landed is
        # recognised by its markers and not sent again (all chunks are reconciled first).
        existed = journal_path.exists()
        _discard(work_dir, journal_path)
    else:
        existed = False
    result = MigrationResult(
        migration_id=mid,
        work_dir=str(work_dir),
        journal=str(journal_path),
        resume_command=resume_command(opts),
    )
    with Journal(journal_path) as journal:
        result.resumed = journal.bind(binding)
        journal.put(resume_command=result.resume_command)
        t_plan = time.monotonic()
        if not journal.planned:
            try:
                _freeze_and_plan(opts, journal, work_dir, mid)
            except BadInput:
                if not result.resumed:  # nothing half-made stays behind a refused first run
                    journal.close()
                    _discard(work_dir, journal_path)
                    with suppress(OSError):
                        work_dir.rmdir()  # only if empty
                raise
        target = sources.open_target(opts.target, key_env=opts.target_key_env)
        counts = journal.counts()
        bar = (
            progress(counts["items_total"], desc="migrate", unit="item")
            if opts.show_progress
            else None
        )
        if bar is not None:
            bar.update(counts["items_done"] + counts["items_dead"])
        send = make_sender(target, opts.mode, journal.get("collection_defs", {}))
        uploader = Uploader(
            journal,
            target,
            send,
            migration_id=mid,
            provenance=opts.provenance,
            concurrency=opts.concurrency,
            max_attempts=opts.max_attempts,
            settle_timeout=opts.settle_timeout,
            stop=stop,
            on_items=(bar.update if bar is not None else None),
        )
        t_upload = time.monotonic()
        result.timings["freeze_plan"] = round(t_upload - t_plan, 3)
        try:
            stats = uploader.run(resumed=result.resumed or existed)
        finally:
            if bar is not None:
                bar.close()
        result.upload = {
            **asdict(stats),
            "concurrency_max": opts.concurrency,
            "concurrency_lowest": uploader.limit.lowest,
            "concurrency_cuts": uploader.limit.cuts,
        }
        if stats.fatal and not _interrupted_by_user(stop, stats):
            _write_outputs(journal, work_dir, None)
            error = BadInput if stats.fatal.startswith("target refused") else LongmemETLError
            raise error(
                f"{stats.fatal}; the journal is consistent — resume with: {result.resume_command}"
            )
        t_verify = time.monotonic()
        result.timings["upload"] = round(t_verify - t_upload, 3)
        report = None
        if not stop.is_set():
            with suppress(Interrupted):
                report = verify_journal(journal, target, migration_id=mid, stop=stop)
        if report is None:  # stopped: everything is journaled; the same command resumes
            result.interrupted = True
            result.counts = journal.counts()
            result.outputs = _write_outputs(journal, work_dir, None)
            result.dead_letters = result.counts["items_dead"]
            result.seconds = time.monotonic() - started
            return result
        result.verification = {**report.as_dict(), "dead_lettered": journal.counts()["items_dead"]}
        result.counts = journal.counts()
        result.dead_letters = result.counts["items_dead"]
        result.outputs = _write_outputs(journal, work_dir, result.verification)
        result.timings["verify_outputs"] = round(time.monotonic() - t_verify, 3)
    result.seconds = time.monotonic() - started
    return result


def _interrupted_by_user(stop: threading.Event, stats: Any) -> bool:
    return stop.is_set() and stats.fatal is None


def _freeze_and_plan(opts: MigrationOptions, journal: Journal, work_dir: Path, mid: str) -> None:
    """First run: freeze the source into the work dir, clean it, store the whole plan."""
    frozen = sources.freeze(
        opts.source, work_dir / "frozen", spec=opts.spec, key_env=opts.source_key_env
    )
    journal.put(
        frozen_snapshot=str(frozen.path) if frozen.path else None,
        frozen_identity=frozen.identity,
        collection_defs=frozen.collection_defs(),
        options={
            "chunk_size": opts.chunk_size,
            "max_bytes": opts.max_bytes,
            "mode": opts.mode,
            "provenance": opts.provenance,
        },
        migration_id=mid,
    )
    items = plan_items(
        frozen.memories(), mode=opts.mode, migration_id=mid, provenance=opts.provenance
    )
    journal.write_plan(items, chunk_size=opts.chunk_size, max_bytes=opts.max_bytes)


def verify_journal(
    journal: Journal, target: Any, *, migration_id: str, stop: threading.Event | None = None
) -> VerificationReport:
    """Compare everything the plan holds with one export of the target; fill in target ids."""
    rows = list(journal.iter_items())
    source = pa.table(
        {
            "source_id": [r[0] for r in rows],
            "collection": [r[2] for r in rows],
            "container_tag": [r[3] for r in rows],
            "fp": [r[4] for r in rows],
        }
    )
    dump = export_target(target, stop=stop)
    provenance = (journal.get("options") or {}).get("provenance", True)
    report = compare(
        source,
        target_keys(dump.get("memories") or []),
        migration_id=migration_id if provenance else None,
    )
    if report.id_pairs is not None and report.id_pairs.num_rows:
        journal.set_target_ids(
            zip(
                report.id_pairs["source_id"].to_pylist(),
                report.id_pairs["target_id"].to_pylist(),
                strict=True,
            )
        )
    return report


def _write_outputs(
    journal: Journal, work_dir: Path, verification: dict[str, Any] | None
) -> dict[str, str]:
    """id map, dead letters and (when known) the verification report — each written atomically."""
    work_dir.mkdir(parents=True, exist_ok=True)
    rows = list(journal.iter_items())
    table = pa.table(
        {
            "source_id": pa.array([r[0] for r in rows], pa.string()),
            "target_id": pa.array([r[1] for r in rows], pa.string()),
            "collection": pa.array([r[2] for r in rows], pa.string()),
            "container_tag": pa.array([r[3] for r in rows], pa.string()),
            "chunk": pa.array([r[5] for r in rows], pa.int64()),
            "state": pa.array([r[6] for r in rows], pa.string()),
        }
    )
    out = {}
    path = work_dir / "id_map.parquet"
    _atomic(path, lambda p: pq.write_table(table, p))
    out["id_map"] = str(path)
    dead = journal.dead_letters()
    path = work_dir / "dead_letter.jsonl"
    _atomic(
        path,
        lambda p: Path(p).write_text(
            "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in dead)
        ),
    )
    out["dead_letter"] = str(path)
    if verification is not None:
        path = work_dir / "verification.json"
        _atomic(path, lambda p: Path(p).write_text(json.dumps(verification, indent=2, default=str)))
        out["verification"] = str(path)
    return out


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    os.replace(tmp, path)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """SIGINT/SIGTERM set ``stop`` (first time); a second SIGINT interrupts hard. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):  # noqa: ARG001
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def migration_status(journal_path: str | os.PathLike) -> dict[str, Any]:
    """What `status JOURNAL` shows: chunk states, items done/total, dead letters, last errors."""
    path = Path(journal_path)
    if path.is_dir():
        path = path / JOURNAL_NAME
    if not path.is_file():
        raise BadInput(f"{journal_path}: no journal there")
    if not is_journal(path):
        raise BadInput(f"{journal_path}: not a longmem-etl migration journal")
    with Journal(path) as journal:
        binding = journal.get("binding")
        if binding is None:
            raise BadInput(f"{journal_path}: not a longmem-etl migration journal")
        counts = journal.counts()
        status = {
            "journal": str(path),
            "migration_id": journal.get("migration_id"),
            "planned": journal.planned,
            "binding": binding,
            "options": journal.get("options"),
            "resume_command": journal.get("resume_command"),
            **counts,
            "dead_letters": counts["items_dead"],
            "last_errors": journal.last_errors(),
        }
    ver = path.parent / "verification.json"
    if ver.is_file():
        status["verification"] = json.loads(ver.read_text())
    return status
