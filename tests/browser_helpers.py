"""What the browser tests share: web servers started in their own process group and stopped by its id
(with an error that names the server and why, should it not come up), headless Chromium (Debian's
package, driven by Playwright), step screenshots kept as test artifacts (and in docs/img/ when
COTPD_UPDATE_SCREENSHOTS=1), and reading MLflow's compare page (its number format, its metrics grid)."""
from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import sync_playwright

from orchestration_helpers import REPO_ROOT, VENV_BIN

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS_IMG = REPO_ROOT / "docs" / "img"
LOG_TAIL = 3000  # characters of a server's log quoted in an error
STOP_GRACE_S = 20  # SIGTERM first; what still runs after this gets SIGKILL


class ServerStartError(AssertionError):
    """A server of a UI test did not come up: which one, why (exit code or wait), its log's tail;
    `pgid` is the process group it ran in (stopped by the time this is raised)."""

    def __init__(self, message: str, pgid: int):
        super().__init__(message)
        self.pgid = pgid


def base_env(**extra: str) -> dict[str, str]:
    """The environment's tools first on PATH, torch on one thread (2 busy cores), plus `extra`."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    env.update(extra)
    return env


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group `pgid` still exists (zombies included until reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member exists but belongs to someone else: still alive
        return True
    return True


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `port` can be bound again (nothing listens on it)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def stop_group(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group led by `proc`, SIGKILL it after `grace_s`, reap the leader and wait
    until no member is left (a server's workers and subprocesses share its group)."""
    pgid = proc.pid
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None and not group_alive(pgid):
                return
            time.sleep(0.2)
    proc.wait(timeout=10)
    if group_alive(pgid):
        raise RuntimeError(f"process group {pgid} ({proc.args[0]}) survived SIGKILL")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-LOG_TAIL:] if log.is_file() else "(no log)"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def server(name: str, cmd: list[str], url: str, env: dict, log: Path, cwd: Path = REPO_ROOT,
           timeout: float = 180) -> Iterator[subprocess.Popen]:
    """Start `cmd` in a process group of its own, wait until `url` answers 200, stop the group at exit.
    Should it exit or not answer in `timeout` s, the group is stopped and a ServerStartError says
    which server (`name`), why, and the tail of its log."""
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0 = time.monotonic()
        while True:
            time.sleep(0.5)  # a command that fails at once is seen failing, not waited on over HTTP
            if proc.poll() is not None:
                why = (f"exited with code {proc.returncode} before {url} answered "
                       f"({time.monotonic() - t0:.1f} s after start)")
            elif _answers(url):
                break
            elif time.monotonic() - t0 > timeout:
                why = f"did not answer {url} within {timeout:g} s"
            else:
                continue
            stop_group(proc)  # before raising: the port is free and no child is left once the test sees it
            raise ServerStartError(f"{name} (pid {proc.pid}) {why}; command: {' '.join(cmd)}\n"
                                   f"log {log}:\n{_tail(log)}", proc.pid)
        yield proc
    finally:
        stop_group(proc)


@contextmanager
def chromium_page(width: int = 1600, height: int = 1000):
    """A page of a fresh headless Chromium (Debian's binary); closed at exit."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


class Shots:
    """Numbered screenshots of a journey's steps in `folder` (the test's tmp_path: its artifacts);
    with COTPD_UPDATE_SCREENSHOTS=1 the ones given a `doc` name are also copied into docs/img/."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.taken: list[Path] = []

    def take(self, page, step: str, doc: str | None = None) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}_{step}.png"
        page.screenshot(path=str(path))
        self.taken.append(path)
        if doc and os.environ.get("COTPD_UPDATE_SCREENSHOTS") == "1":
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, DOCS_IMG / doc)
        return path


# ------------------------------------------------------------------- MLflow UI: numbers, compare grid


def js_number(v: float) -> str:
    """A float as JavaScript's Number#toString writes it (MLflow's UI prints them so)."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def mlflow_metric(v: float) -> str:
    """MLflow UI's Utils.formatMetric for |v| < 10: rounded to 3 decimals (Math.round, half up)."""
    assert abs(v) < 10, v
    return js_number(math.floor(v * 1000 + 0.5) / 1000)


def metric_row(page, name: str) -> list[str] | None:
    """The values shown for metric `name` in the compare page's two virtualized grids (names left,
    values right, rows at the same offset), or None while its row is not in the values' view."""
    return page.get_by_role("grid").evaluate_all("""(grids, name) => {
      const [names, values] = grids;
      const link = Array.from(names.querySelectorAll('a')).find(a => a.textContent.trim() === name);
      if (!link) return null;
      const cell = link.parentElement, top = cell.style.top, y = parseFloat(top);
      if (y < values.scrollTop || y + cell.offsetHeight > values.scrollTop + values.clientHeight) return null;
      return Array.from(values.querySelectorAll('[style]'))
        .filter(c => c.style.top === top && c.style.left !== '')
        .sort((a, b) => parseFloat(a.style.left) - parseFloat(b.style.left)).map(c => c.textContent.trim());
    }""", name)


def scroll_to_metric(page, name: str, step: int = 90) -> list[str]:
    """Wheel the metrics grid down, then up, until `name`'s row is in view; return its values."""
    values = page.get_by_role("grid").nth(1)
    values.scroll_into_view_if_needed()
    box = values.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for delta in (step, -step):
        for _ in range(60):
            row = metric_row(page, name)
            if row is not None:
                page.mouse.wheel(0, 1)  # the name column follows the values' scroll one event late
                return row
            page.mouse.wheel(0, delta)
            page.wait_for_timeout(100)  # pace the wheel: the grid re-renders between events
    raise AssertionError(f"metric {name} not in the compare page's metrics grid")
