"""The MLflow tracking store, opened once per process: created and migrated under a file lock.

MLflow creates a sqlite store on first use by running its alembic migrations, and nothing stops two
processes from doing so at once: `cotpd train`, `cotpd bench`, Dagster steps and `dvc repro` started
together on a fresh clone both migrate, both fail (`table _alembic_tmp_metrics already exists`) and
leave the half-migrated store behind, which then fails every later run. Here the first access to a
sqlite store (the moment MLflow creates or migrates it) and the experiment lookup run under an
exclusive lock on `<db>.lock`, so one process migrates and the others wait, then find it ready. A
store that an earlier, unlocked migration left broken gets a CotpdError saying how to repair it
without losing runs, never a raw SQL traceback.
"""
from __future__ import annotations

import contextlib
import logging
import shlex
import sqlite3
from pathlib import Path
from typing import Iterator

import mlflow
import sqlalchemy.exc
from alembic.util import CommandError
from filelock import FileLock, Timeout

from ..errors import CotpdError

log = logging.getLogger(__name__)

SQLITE = "sqlite:///"
TMP_PREFIX = "_alembic_tmp_"  # alembic's batch mode copies a sqlite table into this one, then renames it
# a migration of a large store takes minutes; past this, whoever holds the lock is stuck, not slow
LOCK_TIMEOUT_S = 900.0


class StoreError(CotpdError):
    """The MLflow tracking store cannot be opened (an interrupted migration, a locked or bad file)."""


def sqlite_file(uri: str) -> Path | None:
    """The database file of an absolute `sqlite:////...` URI; None for any other store."""
    return Path(uri[len(SQLITE):]) if uri.startswith(SQLITE) else None


def _tables(db: Path) -> set[str]:
    # read-only: inspecting a store must never create or change it
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def leftover_tables(db: Path) -> list[str]:
    """Tables an interrupted alembic batch migration left behind (they block every later migration)."""
    return sorted(t for t in _tables(db) if t.startswith(TMP_PREFIX)) if db.is_file() else []


def recovery(db: Path, uri: str, leftovers: list[str]) -> str:
    """How to repair a store whose migration was interrupted, keeping its runs."""
    tables = _tables(db)
    q = shlex.quote(str(db))
    backup = f"cp {q} {shlex.quote(str(db) + '.bak')}"
    orphans = [t for t in leftovers if t[len(TMP_PREFIX):] not in tables]
    if orphans:
        # the original was dropped before its copy was renamed: the copy holds the only rows
        return (f"{', '.join(orphans)} hold(s) the only copy of table(s) "
                f"{', '.join(t[len(TMP_PREFIX):] for t in orphans)}: keep a backup ({backup}) and do not drop "
                f"them; restore the store from a backup taken before the failed migration, or move {db} "
                "aside to start an empty one.")
    drops = " ".join(f"DROP TABLE {t};" for t in leftovers)
    return ("Every original table is intact, so the leftover copies can go and the migration can run "
            f"again; runs are kept:\n  {backup}\n  sqlite3 {q} '{drops}'\n  mlflow db upgrade {shlex.quote(uri)}\n"
            f"(without the sqlite3 tool: python -c \"import sqlite3; sqlite3.connect('{db}').executescript('{drops}')\")")


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Exclusive across processes for a sqlite store (the lock file sits beside it); a no-op for a
    tracking server, which migrates its own database."""
    db = sqlite_file(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(db) + ".lock", timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout as err:
        # the lock dies with its holder, so a live process holds it: a hung migration or a stuck disk
        raise StoreError(f"{db}: another process has held {lock.lock_file} for {LOCK_TIMEOUT_S:.0f} s while "
                         "creating or migrating the MLflow store; look for a hung cotpd or mlflow process") from err
    try:
        yield
    finally:
        lock.release()


def _check_leftovers(db: Path | None, uri: str) -> None:
    leftovers = leftover_tables(db) if db is not None else []
    if leftovers:
        raise StoreError(f"{db}: an earlier migration of this MLflow store was interrupted (leftover "
                         f"table(s) {', '.join(leftovers)}), so MLflow cannot open it. "
                         + recovery(db, uri, leftovers))


def open_experiment(uri: str, name: str, artifact_location: str | None) -> str:
    """Point MLflow at `uri` and return the id of experiment `name` (created if missing; artifact_location
    None leaves the artifacts to the store's default, a tracking server's own artifact store).

    The first access creates or migrates a sqlite store: it happens under `store_lock`, and so does
    the experiment's creation, which two processes would otherwise race on as well."""
    db = sqlite_file(uri)
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):
        _check_leftovers(db, uri)
        try:
            exp = mlflow.get_experiment_by_name(name)
        except (sqlalchemy.exc.SQLAlchemyError, CommandError, mlflow.exceptions.MlflowException) as err:
            if db is None:
                raise
            _check_leftovers(db, uri)  # the migration MLflow just tried failed half-way
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise StoreError(f"{db}: MLflow could not open or migrate this tracking store ({first}). Back it "
                             f"up (cp {db} {db}.bak), then run `mlflow db upgrade {uri}`; if that fails "
                             f"on a table named {TMP_PREFIX}*, drop the table(s) of that name whose "
                             "original still exists and run the upgrade again.") from err
        if exp is not None:
            return exp.experiment_id
        exp_id = _create(name, artifact_location, locked=db is not None)
        log.info("MLflow experiment %r (%s) created in %s", name, exp_id, uri)
        return exp_id


def _create(name: str, artifact_location: str | None, locked: bool) -> str:
    try:
        return mlflow.create_experiment(name, artifact_location=artifact_location)
    except mlflow.exceptions.MlflowException:
        # a tracking server is not under our lock: another process created it after our lookup
        exp = None if locked else mlflow.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id
