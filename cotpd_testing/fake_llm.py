"""A small but real OpenAI-compatible HTTP server for tests and `cotpd bench-llm`.

openai 3.x talks through httpx2, which no httpx mocking library intercepts, so tests run this server
on 127.0.0.1 instead. It answers /v1/chat/completions deterministically (a function of the prompt),
implements the Batch API surface we use (/v1/files, /v1/batches, /v1/files/{id}/content), counts
every request it receives, and injects faults on demand:

    srv = start_server(latency=0.2)
    srv.fail_next("429", n=2, retry_after=1)   # also "500", "timeout", "drop", "malformed"
    ... srv.chat_calls ... srv.stop()

Run standalone: `python -m cotpd_testing.fake_llm --port 8099 --latency 0.2`; with `--load` it
draws latencies and random faults per request and counts what it answers (fake_llm_load.py):
`python -m cotpd_testing.fake_llm --load --median-s 0.15 --p429 0.01`; GET /_stats?detail=1 then
returns the paid answers per request body.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable

from cotpd.llm.base import last_user_text

from .fake_llm_http import Handler, Server
from .fake_llm_load import Load, LoadProfile

__all__ = ["FAULTS", "FakeLLMServer", "ServerProcess", "default_responder", "last_user_text", "start_server"]
FAULTS = ("429", "500", "timeout", "drop", "malformed", "401", "400")


def default_responder(body: dict) -> str:
    """Deterministic answers: "yes" to yes/no fact checks, else an echo of the prompt's start."""
    text = last_user_text(body.get("messages", []))
    if "answer yes or no" in text.lower():
        return "yes"
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"answer {digest}: {text[:80]}"


class FakeLLMServer:
    """The server's state and controls; `start()` serves it on 127.0.0.1 in a daemon thread."""

    def __init__(self, latency: float = 0.0, api_key: str | None = None,
                 responder: Callable[[dict], str] = default_responder, model: str = "fake-model",
                 batch_polls: int = 1, load: Load | None = None):
        self.latency = latency
        self.api_key = api_key  # None: accept any key (like a local vLLM)
        self.responder = responder
        self.model = model
        self.batch_polls = batch_polls  # how many polls a batch reports "in_progress" first
        self.drop_creates = 0  # the next n batch creates succeed but their response is dropped
        self.load = load  # random latency + faults + paid-answer accounting (None: the fixed latency)
        self.lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()
        self.prompts: collections.Counter = collections.Counter()  # chat calls per last user text
        self.faults: collections.deque = collections.deque()
        self.inflight = 0
        self.max_inflight = 0  # most chat calls served at the same time (tests of concurrency)
        self.files: dict = {}
        self.batches: dict = {}
        self._httpd: Server | None = None
        self._thread: threading.Thread | None = None

    # -- controls ---------------------------------------------------------------------------------
    def fail_next(self, kind: str, n: int = 1, **opts) -> None:
        """The next `n` chat calls fail with `kind` (one of FAULTS); opts: retry_after, sleep."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {FAULTS}")
        with self.lock:
            self.faults.extend([(kind, opts)] * n)

    @property
    def chat_calls(self) -> int:
        return self.counts["chat"]

    @property
    def total_calls(self) -> int:
        return sum(self.counts.values())

    def reset_counts(self) -> None:
        with self.lock:
            self.counts.clear()
            self.prompts.clear()
            self.max_inflight = 0

    def completion(self, body: dict) -> dict:
        """A chat.completion object for a request body (also used for batch lines)."""
        text = self.responder(body)
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        with self.lock:
            self.prompts[last_user_text(body.get("messages", []))] += 1
        return {
            "id": "chatcmpl-" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12],
            "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or self.model, "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_words, "completion_tokens": len(text.split()),
                      "total_tokens": prompt_words + len(text.split())},
        }

    # -- state changes, called by the HTTP handler (fake_llm_http) ---------------------------------
    def count_request(self, path: str) -> None:
        path = path.split("?")[0].rstrip("/")
        kind = "chat" if path.endswith("/v1/chat/completions") else path
        with self.lock:
            self.counts[kind] += 1

    def take_fault(self):
        with self.lock:
            return self.faults.popleft() if self.faults else None

    def add_file(self, data: bytes, filename: str, purpose: str) -> dict:
        with self.lock:
            fid = f"file-{len(self.files) + 1}"
            meta = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                    "filename": filename, "purpose": purpose, "status": "processed"}
            self.files[fid] = {"meta": meta, "data": data}
        return meta

    def batch_refusal(self, body: dict) -> str | None:
        """Why the Batch API would refuse this input file (over its line or byte limit), or None."""
        f = self.files.get(body.get("input_file_id"))
        if f is None:
            return f"no file {body.get('input_file_id')!r}"
        if self.load is None:
            return None
        lines = f["data"].count(b"\n")
        if lines > self.load.p.batch_max_lines or len(f["data"]) > self.load.p.batch_max_bytes:
            return (f"input file has {lines} lines and {len(f['data'])} bytes; the limits are "
                    f"{self.load.p.batch_max_lines} lines and {self.load.p.batch_max_bytes} bytes")
        return None

    def create_batch(self, body: dict) -> dict:
        with self.lock:
            bid = f"batch_{len(self.batches) + 1}"
            if self.load is not None:
                data = self.files[body["input_file_id"]]["data"]
                self.load.batches.append({"id": bid, "lines": data.count(b"\n"), "bytes": len(data),
                                          "created": time.time()})
            self.batches[bid] = {"id": bid, "object": "batch", "endpoint": body["endpoint"],
                                 "input_file_id": body["input_file_id"], "status": "validating",
                                 "completion_window": body.get("completion_window", "24h"),
                                 "metadata": body.get("metadata"),
                                 "created_at": int(time.time()), "output_file_id": None,
                                 "error_file_id": None, "_polls": 0, "_ready_at": time.time() +
                                 (self.load.p.batch_delay_s if self.load is not None else 0.0)}
            return {k: v for k, v in self.batches[bid].items() if not k.startswith("_")}

    def poll_batch(self, bid: str) -> dict:
        b = self.batches[bid]
        b["_polls"] += 1
        ready = time.time() >= b["_ready_at"] if self.load is not None else b["_polls"] > self.batch_polls
        if b["status"] in ("validating", "in_progress") and ready:  # failed/expired/cancelled: as they are
            self.run_batch(b)
        elif b["status"] == "validating":
            b["status"] = "in_progress"
        return {k: v for k, v in b.items() if not k.startswith("_")}

    def run_batch(self, b: dict) -> None:
        out, errs = [], []
        lines = self.files[b["input_file_id"]]["data"].decode().splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            item = json.loads(line)
            fault = self.take_fault()
            if fault is not None:  # a failed line lands in the error file, like the real API
                errs.append({"id": f"req_{i}", "custom_id": item["custom_id"], "response": None,
                             "error": {"code": "server_error", "message": f"injected {fault[0]}"}})
                continue
            if self.load is not None:
                self.load.pay(item["body"])
            out.append({"id": f"req_{i}", "custom_id": item["custom_id"], "error": None,
                        "response": {"status_code": 200, "request_id": f"r{i}",
                                     "body": self.completion(item["body"])}})
        dump = lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()  # noqa: E731
        b["output_file_id"] = self.add_file(dump(out), f"{b['id']}_output.jsonl", "batch_output")["id"]
        if errs:
            b["error_file_id"] = self.add_file(dump(errs), f"{b['id']}_errors.jsonl", "batch_output")["id"]
        b["status"] = "completed"
        b["request_counts"] = {"total": len(out) + len(errs), "completed": len(out), "failed": len(errs)}

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, port: int = 0) -> "FakeLLMServer":
        self._httpd = Server(("127.0.0.1", port), Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="fake-llm-server")
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeLLMServer":
        return self if self._httpd else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(port: int = 0, **kwargs) -> FakeLLMServer:
    """Start a FakeLLMServer on 127.0.0.1 (`port=0`: a free port); kwargs go to FakeLLMServer."""
    return FakeLLMServer(**kwargs).start(port)


class ServerProcess:
    """The same server in a child process (`python -m cotpd_testing.fake_llm`), so that a benchmark's
    client does not share its interpreter (and GIL) with 32 server threads."""

    def __init__(self, latency: float = 0.0, load: LoadProfile | None = None):
        extra = ["--load", *load.args()] if load is not None else []
        # its own process group, so that a stop (or a test's cleanup) reaches it by PID alone
        self.proc = subprocess.Popen([sys.executable, "-m", "cotpd_testing.fake_llm", "--latency", str(latency),
                                      *extra], stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.base_url = self.proc.stdout.readline().strip()
        if not self.base_url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError("the test server process did not start")

    def stats(self, detail: bool = False) -> dict:
        root = self.base_url.rsplit("/v1", 1)[0]
        with urllib.request.urlopen(f"{root}/_stats{'?detail=1' if detail else ''}", timeout=60) as r:
            return json.loads(r.read())

    def cpu_s(self) -> float:
        """CPU seconds the server process has used so far (user + system, from /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @property
    def chat_calls(self) -> int:
        return self.stats()["chat_calls"]

    @property
    def total_calls(self) -> int:
        return sum(self.stats()["counts"].values())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cotpd_testing.fake_llm", description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds per chat call")
    ap.add_argument("--api-key", default=None, help="require this bearer key (default: accept any)")
    ap.add_argument("--load", action="store_true", help="random latency and faults, paid-answer accounting")
    for name, default in vars(LoadProfile()).items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default, help="with --load")
    args = ap.parse_args(argv)
    load = Load(LoadProfile(**{k: getattr(args, k) for k in vars(LoadProfile())})) if args.load else None
    srv = start_server(args.port, latency=args.latency, api_key=args.api_key, load=load)
    print(srv.base_url, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # SystemExit leaves the sleep below
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
