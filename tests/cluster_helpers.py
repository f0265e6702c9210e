"""The cluster test's services, started from the project's own deploy/ files on 127.0.0.1.

Every service is a line of deploy/Procfile, started in its own process group and stopped by that
group (SIGTERM, then SIGKILL); `Cluster` stops all of them on exit, after a failure too, and raises
if any process of a group outlives it. A service that does not come up in time raises ServiceError
naming it, how long it waited, and the end of its log.
"""
from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from orchestration_helpers import REPO_ROOT, VENV_BIN, free_port

DEPLOY = REPO_ROOT / "deploy"
PG_BIN = Path(os.environ.get("COTPD_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "cotpd"
_VAR = re.compile(r"\$(\w+)|\$\{(\w+)\}")


class ServiceError(RuntimeError):
    """A service of the cluster test did not come up, or did not go away."""


def missing_tools() -> list[str]:
    """What this machine lacks to run the cluster test (empty: nothing)."""
    need = {"postgres (PostgreSQL 15)": PG_BIN / "postgres", "initdb": PG_BIN / "initdb"}
    gone = [name for name, path in need.items() if not path.is_file()]
    tools = ["redis-server"] + (["runuser"] if os.geteuid() == 0 else [])  # root runs postgres as `postgres`
    return gone + [tool for tool in tools if shutil.which(tool) is None]


def procfile(path: Path = DEPLOY / "Procfile") -> dict[str, str]:
    """`name: command` lines of a Procfile (comments and blank lines skipped)."""
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, sep, cmd = text.partition(":")
        if not sep or not name.strip().isidentifier():
            raise ValueError(f"{path}:{n}: expected `name: command`, got {text!r}")
        out[name.strip()] = cmd.strip()
    return out


def expand(cmd: str, env: dict[str, str]) -> list[str]:
    """A Procfile command as argv, its $VARS taken from `env` (a missing one is an error)."""
    def sub(m: re.Match) -> str:
        key = m.group(1) or m.group(2)
        if key not in env:
            raise KeyError(f"deploy/Procfile: ${key} is not set (command: {cmd})")
        return shlex.quote(env[key])
    return shlex.split(_VAR.sub(sub, cmd))


def group_pids(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (zombies count as gone)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):  # the process ended while we looked
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session: the leader's pid is the group id

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 20) -> str:
        lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines() if self.log.is_file() else []
        return "\n".join(lines[-n:])


def start(name: str, argv: list[str], env: dict[str, str], cwd: Path, logs: Path, user: str | None = None) -> Service:
    logs.mkdir(parents=True, exist_ok=True)
    if user:  # postgres refuses to run as root: as its own user, still in a group we own
        argv = ["runuser", "-u", user, "--", *argv]
    log = logs / f"{name}.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return Service(name, proc, log)


def stop(svc: Service, grace: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """Signal the whole group, SIGKILL what is left after `grace` s; raise if anything survives."""
    for s in (sig, signal.SIGKILL):
        try:
            os.killpg(svc.pgid, s)
        except ProcessLookupError:  # the group is already gone
            pass
        deadline = time.monotonic() + (grace if s != signal.SIGKILL else 10.0)
        while time.monotonic() < deadline and (svc.alive() or group_pids(svc.pgid)):
            time.sleep(0.2)
        if not svc.alive() and not group_pids(svc.pgid):
            break
    svc.proc.wait(timeout=10)
    left = group_pids(svc.pgid)
    if left:
        raise ServiceError(f"{svc.name}: processes {left} of group {svc.pgid} survived SIGKILL")


def wait_ready(svc: Service, probe: Callable[[], bool], timeout: float) -> float:
    """Seconds until `probe()` held; ServiceError naming the service if it exits or times out."""
    t0 = time.monotonic()
    while True:
        waited = time.monotonic() - t0
        if not svc.alive():
            raise ServiceError(f"{svc.name} exited with code {svc.proc.returncode} before it came up (after "
                               f"{waited:.1f} s); end of {svc.log}:\n{svc.tail()}")
        if probe():
            return waited
        if waited > timeout:
            raise ServiceError(f"{svc.name} did not come up within {timeout:.0f} s (waited {waited:.1f} s); "
                               f"end of {svc.log}:\n{svc.tail()}")
        time.sleep(0.5)


def http_ok(url: str) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):  # not listening yet
            return False
    return probe


class Cluster:
    """Postgres, Redis, an MLflow server and Celery workers for one project folder, on loopback."""

    def __init__(self, work: Path, project: Path):
        self.work, self.project, self.logs, self.host = work, project, work / "logs", "127.0.0.1"
        self.services: dict[str, Service] = {}
        self.lines, self.password = procfile(), secrets.token_hex(12)
        self.ports = {k: free_port() for k in ("pg", "redis", "mlflow")}
        self.pgdata: Path | None = None
        self.home = work / "dagster_home"
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEPLOY / "dagster.yaml", self.home / "dagster.yaml")
        broker = f"redis://{self.host}:{self.ports['redis']}"
        self.env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                    "PG_BIN": str(PG_BIN), "PG_HOST": self.host, "REDIS_HOST": self.host,
                    "REDIS_PORT": str(self.ports["redis"]), "MLFLOW_HOST": self.host,
                    "MLFLOW_PORT": str(self.ports["mlflow"]),
                    "MLFLOW_ARTIFACTS_DESTINATION": str(work / "mlflow_artifacts"),
                    "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://{PG_USER}:{self.password}@{self.host}:"
                                                f"{self.ports['pg']}/mlflow",
                    "DAGSTER_HOME": str(self.home), "DAGSTER_PG_HOST": self.host,
                    "DAGSTER_PG_PORT": str(self.ports["pg"]), "DAGSTER_PG_USERNAME": PG_USER,
                    "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": "dagster",
                    "DAGSTER_CELERY_BROKER_URL": f"{broker}/0", "DAGSTER_CELERY_BACKEND_URL": f"{broker}/1",
                    "COTPD_DAGSTER_EXECUTOR": "celery", "COTPD_ROOT": str(project),
                    "CELERY_RUN_CONFIG": str(work / "celery_run.yaml")}

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.host}:{self.ports['mlflow']}"

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        errors = []
        for svc in reversed(list(self.services.values())):
            try:
                stop(svc)
            except ServiceError as err:
                errors.append(str(err))
        if self.pgdata is not None:
            shutil.rmtree(self.pgdata.parent, ignore_errors=False)
        if errors:
            raise ServiceError("; ".join(errors))

    def launch(self, name: str, line: str, probe: Callable[[], bool], timeout: float,
               user: str | None = None) -> float:
        """Start Procfile line `line` as service `name`; seconds it took to come up."""
        svc = start(name, expand(self.lines[line], self.env), self.env, self.project, self.logs, user)
        self.services[name] = svc
        return wait_ready(svc, probe, timeout)

    def pg_connect(self, db: str = "postgres"):
        import psycopg2  # lazy: optional (the `cluster` extra)
        return psycopg2.connect(host=self.host, port=self.ports["pg"], user=PG_USER, password=self.password,
                                dbname=db, connect_timeout=2)

    def _pg_ready(self) -> bool:
        import psycopg2  # lazy: optional (the `cluster` extra)
        try:
            self.pg_connect().close()
            return True
        except psycopg2.OperationalError:  # not accepting connections yet
            return False

    def start_postgres(self, timeout: float = 60) -> float:
        user = "postgres" if os.geteuid() == 0 else None
        top = Path(tempfile.mkdtemp(prefix="cotpd-pg-"))  # not under pytest's root-only tmp: postgres reads it
        self.pgdata = top / "data"
        pwfile = top / "pw"
        pwfile.write_text(self.password, encoding="utf-8")
        if user:
            shutil.chown(top, user)
            shutil.chown(pwfile, user)
        init = [str(PG_BIN / "initdb"), "-D", str(self.pgdata), "-U", PG_USER, f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync"]
        res = subprocess.run((["runuser", "-u", user, "--"] if user else []) + init, capture_output=True, text=True)
        pwfile.unlink()
        if res.returncode:
            raise ServiceError(f"initdb failed ({res.returncode}): {res.stdout[-800:]}{res.stderr[-800:]}")
        self.env["PGDATA"] = str(self.pgdata)
        waited = self.launch("postgres", "postgres", self._pg_ready, timeout, user=user)
        con = self.pg_connect()
        try:
            con.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with con.cursor() as cur:
                cur.execute("CREATE DATABASE dagster")
                cur.execute("CREATE DATABASE mlflow")
        finally:
            con.close()
        return waited

    def start_redis(self, timeout: float = 30) -> float:
        import redis  # lazy: optional (the `cluster` extra)
        def probe() -> bool:
            try:
                return bool(redis.Redis(host=self.host, port=self.ports["redis"], socket_timeout=1).ping())
            except redis.exceptions.ConnectionError:  # not listening yet
                return False
        return self.launch("redis", "redis", probe, timeout)

    def start_mlflow(self, timeout: float = 240) -> float:
        return self.launch("mlflow", "mlflow", http_ok(f"{self.mlflow_uri}/health"), timeout)

    def write_run_config(self, visibility_timeout: int) -> Path:
        """orchestration/run_configs/celery.yaml as is, but for a visibility timeout short enough to
        see a redelivery, and the resources pointing at this project and MLflow server."""
        cfg = yaml.safe_load((REPO_ROOT / "orchestration" / "run_configs" / "celery.yaml").read_text(encoding="utf-8"))
        opts = cfg["execution"]["config"]["config_source"]["broker_transport_options"]
        opts.update(visibility_timeout=visibility_timeout, unacked_restore_interval=1)
        cfg["resources"] = {"project": {"config": {"root": str(self.project)}},
                            "mlflow": {"config": {"tracking_uri": self.mlflow_uri}}}
        path = Path(self.env["CELERY_RUN_CONFIG"])
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        return path

    def worker_name(self, queue: str) -> str:  # the Procfile's `-n <queue>`; celery appends @<host>
        return f"{queue}@{socket.gethostname()}"

    def start_worker(self, queue: str, service: str | None = None, timeout: float = 240) -> float:
        """The Procfile's worker_<queue> line; up once it answers a Celery ping through the broker."""
        from celery import Celery  # lazy: optional (the `cluster` extra)
        app = Celery(broker=self.env["DAGSTER_CELERY_BROKER_URL"])
        name = self.worker_name(queue)
        try:
            return self.launch(service or f"worker_{queue}", f"worker_{queue}",
                               lambda: bool(app.control.ping(destination=[name], timeout=1.0)), timeout)
        finally:
            app.close()

    def materialize(self, partition: str = "sample") -> Service:
        """The launcher: `dagster asset materialize` with the Celery run config, as a user runs it."""
        argv = ["dagster", "asset", "materialize", "--select", "*", "--partition", partition,
                "-m", "orchestration.definitions", "-c", self.env["CELERY_RUN_CONFIG"]]
        svc = start("launcher", argv, self.env, self.project, self.logs)
        self.services["launcher"] = svc
        return svc
