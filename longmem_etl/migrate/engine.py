"""`run_migration`: freeze the source, plan, learn what the target holds, upload, verify — resumably.

One call does the whole migration (`docs/migration.md`); the CLI and the Dagster assets are thin
wrappers over it.

Exactly once is decided by the *target*, not by one journal. Every item carries a marker naming its
source (a stable key: the source account, or the dump's tenant — see `source.source_key`), its
source id and its content fingerprint (`keys`). A run whose journal cannot prove the state — a new
journal, an edited spec, an edited or grown dump, ``--restart`` — plans afresh and first asks the
target (one export, `holdings.learn_holdings`) which items it already holds: those are reported as
"already in the target from earlier runs" and never sent again; items whose landed payload differs
from the new plan are listed (``changed``) and left alone unless ``update_changed``.

State lives under the state home (`state`), keyed by the migration id = hash of {source key, target
identity, mode}: the same migration finds the same journal from any directory. Layout of a
migration's working directory (``{home}/migrations/<migration_id>/``, or the directory holding
``--journal PATH``)::

    .longmem-etl-work   the tool's marker (and the journal's lock file: see `lock`, `workdir`)
    journal.sqlite      the checkpoint (see `journal`)
    frozen/             the source frozen as a snapshot (+ cleaned/ with --spec)
    id_map.parquet      source_id, target_id, collection, container_tag, chunk, state
    dead_letter.jsonl   items the target refused: {source_id, collection, status, message, item}
    verification.json   the final comparison (see `verify`)

One run per migration: an OS lock on the identity (``{home}/locks/<migration_id>.lock``) and one on
the journal's directory, held for the run's lifetime (`lock`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import pyarrow as pa

from longmem_etl.api.endpoints import known_limits, same_account
from longmem_etl.api.keys import DEFAULT_KEY_ENV
from longmem_etl.errors import (
    EXIT_INCOMPLETE,
    EXIT_OK,
    APIError,
    BadInput,
    Incomplete,
    LongmemETLError,
)
from longmem_etl.memory import use_lean_arrow_pool
from longmem_etl.migrate import source as sources
from longmem_etl.migrate import workdir
from longmem_etl.migrate.inuse import holding
from longmem_etl.migrate.journal import Journal, JournalFull
from longmem_etl.migrate.known_limits import refusal_check
from longmem_etl.migrate.lock import migration_locks
from longmem_etl.migrate.plan import (
    DEFAULT_MAX_BYTES,
    MAX_CHUNK_ITEMS,
    MODES,
    PlanSummary,
    plan_items,
    summarise,
)
from longmem_etl.migrate.reconcile import Interrupted, retrying
from longmem_etl.migrate.refusals import RefusalScan
from longmem_etl.migrate.state import locks_dir, migrations_dir
from longmem_etl.migrate.status import (  # noqa: F401 - re-exported: the engine's public calls
    JOURNAL_NAME,
    list_migrations,
    migration_status,
)
from longmem_etl.migrate.uploader import Uploader, make_sender
from longmem_etl.progress import progress
from longmem_etl.secrets import mask_obj

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
    """Where ``<migration_id>/`` dirs go (default ``{home}/migrations``)."""
    max_attempts: int = 8
    """Retry budget: tries of one call on 5xx/timeouts (and of a chunk on other errors)."""
    give_up_after: float | None = None
    """Retry budget in seconds since a call first failed (None: no time limit)."""
    settle_timeout: float = 30.0
    show_progress: bool = True
    wait: bool = False
    """Wait for a run holding this migration's lock instead of refusing (exit 2)."""
    update_changed: bool = False
    """Items already in the target whose payload differs from the plan: ``update`` them."""
    copy: str | None = None
    """A deliberate extra copy: markers carry a key derived from the source AND this name."""


@dataclass
class MigrationResult:
    migration_id: str
    work_dir: str | None
    journal: str | None
    dry_run: bool = False
    resumed: bool = False
    interrupted: bool = False
    replanned: str | None = None
    """Why an existing journal did not prove the state and the plan was made afresh."""
    source_key: str | None = None
    plan: dict[str, Any] | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    holdings: dict[str, Any] = field(default_factory=dict)
    """``already_in_target`` (from earlier runs), ``changed``, ``updated``, ``changed_items``."""
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
        # error texts in `upload` may echo a server's words; `mask_obj` builds new dicts and
        # lists, so `asdict`'s deep copy first would only copy everything twice
        out = cast(dict, mask_obj({f.name: getattr(self, f.name) for f in fields(self)}))
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
            from longmem_etl.api.limits import StoreLimits
            from longmem_etl.migrate.refusals import RefusalScan

            refused = plan.get("refused") or {}
            limits = refused.get("limits")
            scan = RefusalScan(None if limits is None else StoreLimits(**limits))
            scan.refused = list(refused.get("items") or [])
            return (
                f"dry run (migration {self.migration_id}): nothing written, no target call\n"
                + summary.render()
                + "\n"
                + scan.render()
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
        h = self.holdings or {}
        line = f"already in the target from earlier runs: {h.get('already_in_target', 0)}"
        if self.replanned:
            line += f" (planned afresh: {self.replanned})"
        lines.append(line)
        if h.get("changed"):
            waiting = h["changed"] - h.get("updated", 0)
            lines.append(
                f"{h['changed']} item(s) in the target differ from what this plan would send "
                f"({h.get('updated', 0)} updated"
                + (
                    f", {waiting} left as they are — --update-changed updates them"
                    if waiting
                    else ""
                )
                + "; --json lists them)"
            )
        ver = self.verification or {}
        t = ver.get("totals", {})
        if ver.get("error"):
            lines.append(f"verification: NOT DONE — {ver['error']}")
        else:
            lines.append(
                f"verification: {'EXACT' if ver.get('exact') else 'MISMATCH'} — missing "
                f"{t.get('missing')}, duplicated {t.get('duplicated')}, extra {t.get('extra')}"
            )
        for name, path in self.outputs.items():
            lines.append(f"  {name}: {path}")
        if self.dead_letters:
            lines.append(
                f"{self.dead_letters} item(s) dead-lettered (refused by the target, or retry budget "
                f"spent): see {self.outputs.get('dead_letter')}"
            )
        return "\n".join(lines)


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _validate(opts: MigrationOptions) -> None:
    if opts.mode not in MODES:
        raise BadInput(f"--mode {opts.mode!r}: must be one of {', '.join(MODES)}")
    if not 1 <= opts.chunk_size <= MAX_CHUNK_ITEMS:
        raise BadInput(f"--chunk-size {opts.chunk_size}: must be between 1 and {MAX_CHUNK_ITEMS}")
    if not 1 <= opts.max_attempts <= 1000:
        raise BadInput(f"--max-attempts {opts.max_attempts}: must be between 1 and 1000")
    if opts.give_up_after is not None and not opts.give_up_after > 0:
        raise BadInput(f"--give-up-after {opts.give_up_after}: must be a positive duration")
    if not 1 <= opts.concurrency <= 64:
        raise BadInput(f"--concurrency {opts.concurrency}: must be between 1 and 64")
    if opts.spec is not None and not Path(opts.spec).is_file():
        raise BadInput(f"{opts.spec}: no such spec file")
    if opts.copy is not None and not opts.copy.strip():
        raise BadInput("--copy: give the extra copy a non-empty name")
    if opts.copy is not None and not opts.provenance:
        raise BadInput("--copy needs provenance markers; drop --no-provenance")
    if opts.spec is not None:  # a bad or hostile spec is refused before any directory is made
        from longmem_etl.transforms.spec import load_spec

        load_spec(opts.spec)


def binding_of(opts: MigrationOptions) -> dict[str, Any]:
    """What the journal is bound to — the migration's stable identity, never secrets, never the
    spec or the source's content (those may change between runs; see `plan_binding_of`)."""
    ident = sources.stable_source_identity(
        opts.source, key_env=opts.source_key_env, keep_opened=True
    )
    target = sources.target_identity(opts.target, key_env=opts.target_key_env)
    # device + inode: a hard link, symlink or other spelling of the source store is the same
    if ident.get("account") is not None and same_account(ident["account"], target):
        raise BadInput(
            f"--source and --target are the same account ({opts.target}); nothing to migrate"
        )
    return {
        "source": {
            "identity": ident,
            "copy": opts.copy,
            "key": sources.source_key(ident, opts.copy),
        },
        "target": target,
        "mode": {"mode": opts.mode, "provenance": opts.provenance},
    }


def plan_binding_of(opts: MigrationOptions) -> dict[str, Any]:
    """What a journal's plan was made from: the source's content identity and the spec's sha256.
    When either differs, the journal no longer proves what is in the target."""
    spec_sha = hashlib.sha256(Path(opts.spec).read_bytes()).hexdigest() if opts.spec else None
    content = sources.source_identity(opts.source, key_env=opts.source_key_env)
    return {"content": content, "spec": spec_sha}


def migration_id_of(binding: dict[str, Any]) -> str:
    return _sha(binding)[:16]


def journal_path_of(opts: MigrationOptions, mid: str) -> Path:
    if opts.journal:
        return Path(opts.journal).expanduser().absolute()
    root = Path(opts.work_root).expanduser() if opts.work_root else migrations_dir()
    return (root / mid / JOURNAL_NAME).absolute()


def resume_command(opts: MigrationOptions, journal_path: Path | None = None) -> str:
    """The exact command that continues this migration: every flag the parser knows, absolute
    paths (generated from the argparse parser, so a new flag cannot be forgotten)."""
    from longmem_etl.cli.migrate import command_for

    return command_for(opts, journal_path)


def _discard_plan(work_dir: Path) -> None:
    """Remove what a plan made in OUR work dir (the caller checked the marker)."""
    shutil.rmtree(work_dir / "frozen", ignore_errors=True)
    for name in OUTPUT_FILES:
        (work_dir / name).unlink(missing_ok=True)


def dry_run(opts: MigrationOptions) -> MigrationResult:
    """Plan without touching anything: no journal, no work dir, no target call."""
    _validate(opts)
    sources.check_target_uri(opts.target)
    binding = binding_of(opts)
    mid = migration_id_of(binding)
    key = binding["source"]["key"]
    scan = RefusalScan(known_limits(opts.target))  # items the target would refuse, named first
    with sources.frozen_temporarily(
        opts.source, spec=opts.spec, key_env=opts.source_key_env
    ) as frozen:
        from longmem_etl.migrate.planstream import planned_items
        from longmem_etl.snapshots.reader import open_snapshot

        # the plan the real run streams (column-wise, `planstream`), not the per-memory one
        memories = open_snapshot(frozen.path, verify=False).memories_path
        planned = planned_items(
            memories, mode=opts.mode, source_key=key if opts.provenance else None
        )
        summary = summarise(
            scan.watch(planned),
            mode=opts.mode,
            chunk_size=opts.chunk_size,
            max_bytes=opts.max_bytes,
        )
    return MigrationResult(
        migration_id=mid,
        work_dir=None,
        journal=None,
        dry_run=True,
        source_key=key,
        plan={**summary.as_dict(), "refused": scan.as_dict()},
    )


def run_migration(
    opts: MigrationOptions, *, stop: threading.Event | None = None
) -> MigrationResult:
    """Run (or resume) a migration to the end, or until ``stop`` is set. See the module docstring.

    Returns a result whose ``exit_code`` is 0 only when verification is exact and nothing was
    dead-lettered, 3 otherwise, 130 when stopped (the journal is consistent; run again to resume).
    Raises BadInput (exit 2) when another run holds the migration's lock (unless ``opts.wait``),
    or when something the tool did not make is in the way of its work dir.
    """
    try:
        return _run_migration(opts, stop)
    finally:
        sources.forget_opened()  # the dump opened and hashed for this run: not kept past it


def _run_migration(opts: MigrationOptions, stop: threading.Event | None) -> MigrationResult:
    """`run_migration`, with what the source module remembers for this run dropped after it."""
    if opts.dry_run:
        return dry_run(opts)
    _validate(opts)
    use_lean_arrow_pool()  # the freeze's and the verification's Arrow bursts: see `memory`
    stop = stop or threading.Event()
    binding = binding_of(opts)
    mid = migration_id_of(binding)
    journal_path = journal_path_of(opts, mid)
    work_dir = journal_path.parent
    workdir.claim(work_dir, journal_path)
    with (
        migration_locks(
            locks_dir() / f"{mid}.lock",
            work_dir / workdir.MARKER,
            what=f"migration {mid}",
            wait=opts.wait,
        ),
        holding(opts.source, mid, journal_path, stop),  # `forget` keeps the source until we finish
    ):
        try:
            return _run_locked(opts, stop, binding, mid, journal_path)
        except JournalFull as exc:  # from whichever write hit the limit: the user's to fix
            raise JournalFull(
                f"{exc}; the journal is consistent — free space, then resume with: "
                f"{resume_command(opts, journal_path)}"
            ) from None


def _run_locked(
    opts: MigrationOptions,
    stop: threading.Event,
    binding: dict[str, Any],
    mid: str,
    journal_path: Path,
) -> MigrationResult:
    started = time.monotonic()
    work_dir = journal_path.parent
    key = binding["source"]["key"]
    # the source's content identity hashes the whole dump: in a thread (hashlib lets go of the
    # GIL), needed at once only to resume; a fresh plan stores it when the plan is finished
    plan_binding = _Background(plan_binding_of, opts)
    result = MigrationResult(
        migration_id=mid,
        work_dir=str(work_dir),
        journal=str(journal_path),
        source_key=key,
        resume_command=resume_command(opts, journal_path),
    )
    existed = journal_path.exists()
    # `cleanup` ends before the journal closes: whatever the run started beside it is over first
    with Journal(journal_path) as journal, contextlib.ExitStack() as cleanup:
        old = journal.get("binding")
        if old is not None and "key" not in (old.get("source") or {}):
            journal.reset()  # an older version's journal: its markers carry no source key
            journal.put(binding=None)
        had_plan = journal.bind(binding) and journal.planned
        result.replanned = _why_replan(opts, journal, plan_binding.result()) if had_plan else None
        if result.replanned:
            journal.reset()
            _discard_plan(work_dir)
        result.resumed = had_plan and not result.replanned
        journal.put(resume_command=result.resume_command)
        t_plan = time.monotonic()
        fresh = not journal.planned
        # A fresh plan with provenance markers is written while the upload runs (`planstream`):
        # what already landed is known from the markers (one export, before the first batch).
        streamed = fresh and opts.provenance and os.environ.get("LONGMEM_ETL_STREAM_PLAN") != "0"
        # What the target already holds is read (one export) WHILE the source is frozen: the
        # export is mostly the API's latency, the freeze mostly our CPU.
        holdings_read = HoldingsRead(opts, key, stop) if streamed else None
        # A dump frozen without a spec hands its rows over while it converts: the plan is
        # written, and the upload runs, during the freeze (`pipeline`).
        overlap = (
            streamed
            and opts.mode == "add"
            and sources.freezes_in_rows(opts.source, opts.spec)
            and os.environ.get("LONGMEM_ETL_OVERLAP_FREEZE") != "0"
        )
        ctx = _Run(
            opts, journal, journal_path, mid, key, plan_binding, stop, result, existed, t_plan
        )
        cleanup.callback(ctx.close_prepared)
        if overlap:
            assert holdings_read is not None
            from longmem_etl.migrate.pipeline import freeze_plan_upload

            target, uploader, stats, streamed_plan, t_upload = freeze_plan_upload(
                ctx, holdings_read
            )
        else:
            target, uploader, stats, streamed_plan, t_upload = _freeze_then_upload(
                ctx, holdings_read, fresh=fresh, streamed=streamed
            )
        if streamed_plan is not None:
            held = {
                "already_in_target": streamed_plan.held,
                "changed": streamed_plan.changed,
                "with_extra_copies": streamed_plan.with_copies,
            }
            journal.put(holdings=held)
            result.holdings = dict(held)
            result.timings["plan_overlapped"] = round(streamed_plan.seconds, 3)
        if fresh and not opts.provenance:
            result.holdings["already_in_target"] = stats.reconciled_items
            journal.put(holdings=result.holdings)
        result.upload = {
            **asdict(stats),
            "concurrency_max": opts.concurrency,
            "concurrency_lowest": uploader.limit.lowest,
            "concurrency_cuts": uploader.limit.cuts,
        }
        failure = uploader.failure
        if failure is not None:  # not a Ctrl-C: that stops with no failure
            _write_outputs(journal, work_dir, None)
            raise (BadInput if failure.user else LongmemETLError)(
                f"{failure.message}; the journal is consistent — resume with: "
                f"{result.resume_command}"
            )
        if opts.update_changed and not stop.is_set():
            _update_changed(journal, target, stop)
        _report_changed(journal, result)
        t_verify = time.monotonic()
        result.timings["upload"] = round(t_verify - t_upload, 3)
        closing: Closing | None = None
        try:
            report = None
            if not stop.is_set():
                try:
                    from longmem_etl.migrate.verifying import verify_journal

                    aside = _Aside(journal, work_dir)

                    def close_target() -> None:  # its last answer is in: close beside the rest
                        nonlocal closing
                        closing = Closing(target)

                    report = verify_journal(
                        journal,
                        target,
                        migration_id=key,
                        stop=stop,
                        foreign_copies=opts.copy is None,
                        max_retries=opts.max_attempts - 1,
                        give_up_after=opts.give_up_after,
                        prepared=ctx.prepared,
                        # the upload's last read of the target, when nothing was sent after it
                        # (not on resume, nor after --update-changed's calls: see
                        # `Uploader.settled_keys`)
                        target_keys=(
                            None if result.resumed or opts.update_changed else uploader.settled_keys
                        ),
                        meanwhile=aside,
                        target_done=close_target,
                    )
                    result.timings["verify_target_read_reused"] = int(
                        report.target_read == "settled"
                    )
                except Interrupted:
                    pass
                except APIError as exc:  # the target cannot be read within the budget: exit 3
                    result.counts = journal.counts()
                    result.dead_letters = result.counts["items_dead"]
                    result.verification = {
                        "exact": False,
                        "error": f"cannot read the target: {exc}",
                    }
                    result.outputs = _write_outputs(journal, work_dir, result.verification)
                    result.seconds = time.monotonic() - started
                    return result
            if report is None:  # stopped: everything is journaled; the same command resumes
                result.interrupted = True
                result.counts = journal.counts()
                result.outputs = _write_outputs(journal, work_dir, None)
                result.dead_letters = result.counts["items_dead"]
                result.seconds = time.monotonic() - started
                return result
            _finish_verified(result, aside, report, t_verify)
        finally:
            if closing is not None:
                closing.join()
    result.seconds = time.monotonic() - started
    return result


class _Aside:
    """What a verified run writes that depends on neither the target nor the comparison: the
    journal's counts, the dead letters and the id map as the journal has it, made while
    verification waits for the target read (`verifying.verify_journal`'s ``meanwhile``), not
    after the comparison. Verification changes no item's state, so the counts and the dead
    letters stay true; the id map is written again only if verification found ids it lacked."""

    def __init__(self, journal: Journal, work_dir: Path) -> None:
        self.journal, self.work_dir = journal, work_dir
        self._made: tuple[dict[str, Any], str, str] | None = None

    def __call__(self, id_map: Any) -> None:
        from longmem_etl.migrate.verifying import write_dead_letters, write_id_map

        counts = self.journal.counts()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._made = (
            counts,
            write_dead_letters(self.journal, self.work_dir),
            write_id_map(self.journal, self.work_dir, id_map),
        )
        self.journal.checkpoint()  # the journal's close at the end then has little left to copy

    def made(self, report: Any) -> tuple[dict[str, Any], str, str]:
        """``(counts, dead letter path, id map path)``, the id map with what ``report`` found.
        (`verify_journal` returns a report only after running its ``meanwhile``: made.)"""
        from longmem_etl.migrate.verifying import write_id_map

        counts, dead_letter, id_map = cast(tuple, self._made)
        if report.ids_found:
            id_map = write_id_map(self.journal, self.work_dir, report.id_map)
        return counts, dead_letter, id_map


def _finish_verified(result: MigrationResult, aside: _Aside, report: Any, t_verify: float) -> None:
    """A verified run's counts, outputs and timings."""
    from longmem_etl.migrate.verifying import write_report

    counts, dead_letter, id_map = aside.made(report)
    result.verification = {**report.as_dict(), "dead_lettered": counts["items_dead"]}
    result.counts = counts
    result.dead_letters = counts["items_dead"]
    t_outputs = time.monotonic()
    result.outputs = {
        "id_map": id_map,
        "dead_letter": dead_letter,
        "verification": write_report(aside.work_dir, result.verification),
    }
    done = time.monotonic()
    result.timings["verify"] = round(t_outputs - t_verify, 3)
    result.timings["outputs"] = round(done - t_outputs, 3)
    result.timings["verify_outputs"] = round(done - t_verify, 3)


@dataclass
class _Run:
    """What the phases of one locked run share."""

    opts: MigrationOptions
    journal: Journal
    journal_path: Path
    mid: str
    key: str
    _plan_binding: _Background
    stop: threading.Event
    result: MigrationResult
    existed: bool
    t_plan: float
    prepared: Any = None
    """`verifyprep.PreparedVerification`, once the plan is finished (`prepare_verification`)."""

    @property
    def work_dir(self) -> Path:
        return self.journal_path.parent

    @property
    def plan_binding(self) -> dict[str, Any]:
        """`plan_binding_of` (waits for its hashing thread)."""
        return self._plan_binding.result()

    def prepare_verification(self) -> None:
        """The plan is finished and calls are out: prepare verification now (`verifyprep`: a warm
        DuckDB connection, the plan's fixed columns), in a thread, so that only the target read
        and the comparison are left after the last answer. Imports its stack (DuckDB) too."""
        if self.prepared is None and self.journal.planned and not self.stop.is_set():
            from longmem_etl.migrate.verifying import PreparedVerification

            self.prepared = PreparedVerification(self.journal_path)

    def close_prepared(self) -> None:
        """End the verification's preparation however the run ends (verification closes it
        when it runs): a run stopped by an error must not exit with its thread still in DuckDB
        or Arrow, where interpreter shutdown ends a daemon thread by unwinding it through C++
        (seen as SIGABRT, "FATAL: exception not rethrown", instead of exit 2)."""
        if self.prepared is not None:
            self.prepared.close()

    def refused(self) -> None:
        """A first run refused while freezing (bad input): nothing half-made stays behind."""
        if not self.existed:
            self.journal.close()
            _remove_journal(self.journal_path)
            _discard_plan(self.work_dir)

    def holdings_unreadable(self, exc: Exception) -> Incomplete:
        _write_outputs(self.journal, self.work_dir, None)
        return Incomplete(
            f"cannot read the target to learn what it already holds ({exc}); nothing "
            f"was sent — resume with: {self.result.resume_command}"
        )

    def progress_bar(self, total: int | None) -> Any:
        if not self.opts.show_progress:
            return None
        return progress(total, desc="migrate", unit="item", heartbeat=True)

    def uploader(self, target: Any, bar: Any) -> Uploader:
        opts = self.opts
        send = make_sender(target, opts.mode, self.journal.get("collection_defs", {}))
        return Uploader(
            self.journal,
            target,
            send,
            migration_id=self.key,
            provenance=opts.provenance,
            concurrency=opts.concurrency,
            max_attempts=opts.max_attempts,
            give_up_after=opts.give_up_after,
            settle_timeout=opts.settle_timeout,
            stop=self.stop,
            on_items=(bar.update if bar is not None else None),
            refuses=refusal_check(opts.target),
        )


def _freeze_then_upload(
    ctx: _Run, holdings_read: HoldingsRead | None, *, fresh: bool, streamed: bool
):
    """Freeze the source whole (a fresh plan), then upload — with the plan streamed during the
    upload when ``streamed``. Returns ``(target, uploader, stats, streamed plan, upload start)``."""
    opts, journal, result = ctx.opts, ctx.journal, ctx.result
    if fresh:
        try:
            _freeze_and_plan(
                opts, journal, ctx.work_dir, ctx.mid, ctx.key, ctx.plan_binding, write=not streamed
            )
        except BaseException as exc:
            if holdings_read is not None:
                holdings_read.cancel()
            if isinstance(exc, BadInput):
                ctx.refused()
            raise
    target = sources.open_target(opts.target, key_env=opts.target_key_env)
    feed, streamed_plan = None, None
    if holdings_read is not None:
        feed, streamed_plan = _plan_feed(opts, journal, holdings_read, ctx.key, ctx.stop, ctx)
    elif fresh and opts.provenance:
        from longmem_etl.migrate.holdings import learn_holdings

        t_held = time.monotonic()
        try:
            found = learn_holdings(
                journal,
                target,
                source_key=ctx.key,
                stop=ctx.stop,
                max_retries=opts.max_attempts - 1,
                give_up_after=opts.give_up_after,
            )
        except APIError as exc:  # unreadable within the retry budget: nothing sent, exit 3
            raise ctx.holdings_unreadable(exc) from None
        journal.put(holdings=found.as_dict())
        result.timings["holdings"] = round(time.monotonic() - t_held, 3)
    result.holdings = dict(journal.get("holdings") or {"already_in_target": 0})
    counts = journal.counts()
    total = counts["items_total"]
    if streamed:
        import pyarrow.parquet as pq  # here: not on a pipelined run's way to its first call

        total = pq.ParquetFile(_memories_file(journal)).metadata.num_rows
    bar = ctx.progress_bar(total)
    if bar is not None:
        bar.update(counts["items_done"] + counts["items_dead"])
    uploader = ctx.uploader(target, bar)
    if not streamed:
        ctx.prepare_verification()  # the plan is whole already (a resumed or written one)
    t_upload = time.monotonic()
    result.timings["freeze_plan"] = round(t_upload - ctx.t_plan, 3)
    try:
        # A resumed journal reconciles every unfinished chunk; so does a fresh plan without
        # provenance (content counting is its only way to learn what is already there).
        stats = uploader.run(resumed=result.resumed or (fresh and not opts.provenance), feed=feed)
    finally:
        if bar is not None:
            bar.close()
    return target, uploader, stats, streamed_plan, t_upload


def _write_outputs(
    journal: Journal, work_dir: Path, verification: dict[str, Any] | None
) -> dict[str, str]:
    """`verifying.write_outputs`, imported when needed: verification's stack (DuckDB) is not on
    the way to the first call."""
    from longmem_etl.migrate.verifying import write_outputs

    return write_outputs(journal, work_dir, verification)


class _Background:
    """``fn(*args)`` computed in a thread; `result` waits for it (and raises what it raised)."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised by result()
                self._error = exc

        self._thread = threading.Thread(target=run, name="background", daemon=True)
        self._thread.start()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _why_replan(
    opts: MigrationOptions, journal: Journal, plan_binding: dict[str, Any]
) -> str | None:
    """None when the journal proves the state; else why it does not (the plan is then redone)."""
    if opts.restart:
        return "--restart"
    old = journal.get("plan_binding") or {}
    if old.get("spec") != plan_binding["spec"]:
        return "the spec changed"
    if old.get("content") != plan_binding["content"]:
        return "the source changed"
    if plan_binding["content"].get("kind") == "endpoint" and journal.counts()["items_pending"] == 0:
        return "the previous run finished; the source account is read again"
    return None


def _remove_journal(journal_path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(journal_path) + suffix).unlink(missing_ok=True)


def _update_changed(journal: Journal, target: Any, stop: threading.Event) -> None:
    """``update`` every landed item whose payload differs from the plan (marker and all)."""
    for row in journal.changed_items(state="found"):
        if stop.is_set():
            return
        item = json.loads(row["payload"])
        retrying(
            lambda item=item, row=row: target.update(
                row["target_id"],
                collection=row["collection"],
                text=item.get("text"),
                importance=item.get("importance"),
                category=item.get("category"),
                metadata=item.get("metadata"),
            ),
            stop=stop,
        )
        journal.mark_updated(row["source_id"])


def _report_changed(journal: Journal, result: MigrationResult) -> None:
    rows = journal.changed_items()
    result.holdings["changed"] = len(rows)
    result.holdings["updated"] = sum(r["state"] == "updated" for r in rows)
    result.holdings["changed_items"] = [
        {k: r[k] for k in ("source_id", "target_id", "collection", "state")} for r in rows
    ]


def _memories_file(journal: Journal) -> Path:
    """The frozen source's full-state memories file (an increment or an encrypted snapshot is
    materialised by ``open_snapshot``; a plain full one is read in place)."""
    from longmem_etl.snapshots.reader import open_snapshot

    return open_snapshot(journal.get("frozen_snapshot"), verify=False).memories_path


class HoldingsRead:
    """What the target holds under this source key (one export, within the writes' retry
    budget), read in a thread started before the freeze, so the two overlap.

    A ``local:`` target that does not exist yet holds nothing: it is not created here (a run
    refused while freezing leaves no store behind); the uploader creates it."""

    def __init__(self, opts: MigrationOptions, key: str, stop: threading.Event) -> None:
        self._opts, self._key = opts, key
        self._stop = threading.Event()
        self._user_stop = stop
        self._held: dict[str, tuple[str | None, int, str | None]] | None = None
        self._error: BaseException | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._read, name="holdings-read", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        t0 = time.monotonic()
        try:
            try:
                target = sources.open_target(
                    self._opts.target, key_env=self._opts.target_key_env, create=False
                )
            except BadInput:
                if not self._opts.target.startswith("local:"):
                    raise
                self._held = {}  # no store there yet: it holds nothing
                return
            try:
                self._held = self._markers(target)
            finally:
                _close(target)  # the uploader opens its own: this read's store is done
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self._error = exc
        finally:
            self.seconds = time.monotonic() - t0

    def _markers(self, target: Any) -> dict[str, tuple[str | None, int, str | None]]:
        """The target's markers of this source key. Imported here, not at the top: the read's
        stack (DuckDB, ~0.1 s of imports under the GIL) is not loaded when there is no target
        to read, e.g. a ``local:`` store the migration is about to create."""
        from longmem_etl.migrate.planstream import held_by_marker
        from longmem_etl.migrate.targetread import read_target_keys

        keys = read_target_keys(
            target,
            fingerprints=False,
            stop=_either(self._stop, self._user_stop),
            max_retries=self._opts.max_attempts - 1,
            give_up_after=self._opts.give_up_after,
        )
        return held_by_marker(keys, self._key)

    def ready(self) -> bool:
        """True once the read has ended (`result` answers without waiting)."""
        return not self._thread.is_alive()

    def cancel(self) -> None:
        """The run failed before needing the answer: stop the read and wait for the thread."""
        self._stop.set()
        self._thread.join()

    def result(self) -> dict[str, tuple[str | None, int, str | None]]:
        """The holdings (waits for the read); raises what the read raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._held is not None
        return self._held


def _close(target: Any) -> None:
    """Close an API object the engine opened (a ``local:`` store's connections; the last one
    checkpoints its log), if it can be closed; best effort, as at interpreter exit."""
    close = getattr(target, "close", None)
    if close is None:
        return
    with contextlib.suppress(Exception):  # best effort: the data is committed already
        close()


class Closing:
    """``target.close()`` in a thread, started as soon as verification has read the target (a
    local store's final WAL checkpoint overlaps the comparison and the outputs); `join` before
    the run returns, so nothing is left for interpreter shutdown to do."""

    def __init__(self, target: Any) -> None:
        self._thread = threading.Thread(target=_close, args=(target,), name="close-target")
        self._thread.start()

    def join(self) -> None:
        self._thread.join()


def _either(a: threading.Event, b: threading.Event) -> Any:
    """A stop flag that is set when either event is (``is_set``/``wait`` as `retry_read` uses)."""

    class Either:
        def is_set(self) -> bool:
            return a.is_set() or b.is_set()

        def wait(self, timeout: float | None = None) -> bool:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                a.wait(0.05 if left is None else min(0.05, left))
            return True

    return Either()


def _plan_feed(
    opts: MigrationOptions,
    journal: Journal,
    holdings_read: HoldingsRead,
    key: str,
    stop: threading.Event,
    ctx: _Run,
):
    """What the target holds (`HoldingsRead`), then the uploader's ``feed``: the streamed plan,
    queueing each chunk once its rows are durable. A target unreadable within the budget ->
    Incomplete (exit 3), nothing sent."""
    from longmem_etl.migrate.planstream import StreamedPlan, stream_plan

    try:
        held = holdings_read.result()
    except APIError as exc:
        raise ctx.holdings_unreadable(exc) from None
    ctx.result.timings["holdings"] = round(holdings_read.seconds, 3)
    report = StreamedPlan()
    memories = _memories_file(journal)

    def feed(queue) -> None:
        stream_plan(
            journal,
            memories,
            mode=opts.mode,
            source_key=key,
            chunk_size=opts.chunk_size,
            max_bytes=opts.max_bytes,
            held=held,
            put=queue.put,
            stop=stop,
            report=report,
        )
        ctx.prepare_verification()  # the plan is finished; its last calls are out

    return feed, report


def _freeze_and_plan(
    opts: MigrationOptions,
    journal: Journal,
    work_dir: Path,
    mid: str,
    key: str,
    plan_binding: dict[str, Any],
    *,
    write: bool = True,
) -> None:
    """A fresh plan: freeze the source into the work dir, clean it, store the whole plan (or, with
    ``write=False``, leave the plan to the streaming planner)."""
    frozen = sources.freeze(
        opts.source,
        work_dir / "frozen",
        spec=opts.spec,
        key_env=opts.source_key_env,
        identity=plan_binding["content"],
    )
    pa.default_memory_pool().release_unused()  # convert's Arrow buffers: not needed any more
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
        source_key=key,
        plan_binding=plan_binding,
    )
    if not write:
        return
    items = plan_items(
        frozen.memories(), mode=opts.mode, source_key=key, provenance=opts.provenance
    )
    journal.write_plan(items, chunk_size=opts.chunk_size, max_bytes=opts.max_bytes)


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
