"""The HTTP side of the fake OpenAI-compatible server: routes, auth, injected faults, uploads.

The state it serves (answers, counters, files, batches) is a cotpd_testing.fake_llm.FakeLLMServer,
reached as `self.server.fake`.
"""
from __future__ import annotations

import email.parser
import json
import re
import socket
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's connection pool is exercised
    server: "Server"

    def log_message(self, fmt, *args):  # quiet: tests read counters, not logs
        pass

    # -- plumbing ---------------------------------------------------------------------------------
    def _send(self, status: int, payload, headers: dict | None = None, raw: bytes | None = None):
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, headers: dict | None = None, code: str | None = None):
        self._send(status, {"error": {"message": message, "type": "fake_error", "code": code}}, headers)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorized(self) -> bool:
        fake = self.server.fake
        if fake.api_key is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {fake.api_key}":
            return True
        self._error(401, "Incorrect API key provided.", code="invalid_api_key")
        return False

    # -- routes -----------------------------------------------------------------------------------
    def _load_fault(self, chat: bool) -> bool:
        """With a load profile: wait the drawn latency (chat only) and serve the drawn fault, if any
        (True: the request is answered by the fault)."""
        load = self.server.fake.load
        if load is None:
            return False
        latency, fault, code = load.draw()
        if chat:
            time.sleep(latency)
        if fault == "429":
            self._error(429, "Rate limit reached", {"Retry-After": load.p.retry_after_s})
        elif fault == "5xx":
            self._error(code, "The server had an error")
        elif fault == "drop":
            self._drop()
        return fault is not None

    def _drop(self):  # close the socket without a response
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def do_POST(self):
        fake = self.server.fake
        body = self._body()
        fake.count_request(self.path)
        if not self._authorized():
            return
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/v1/chat/completions"):
            if not body:  # a client killed before sending its body: nothing to answer, nothing paid
                return self._error(400, "empty request body")
            return self._chat(json.loads(body))
        if self._load_fault(chat=False):
            return None
        if path.endswith("/v1/files"):
            return self._upload(body)
        if path.endswith("/v1/batches"):
            body = json.loads(body)
            refusal = fake.batch_refusal(body)
            if refusal:
                return self._error(400, refusal, code="invalid_batch")
            batch = fake.create_batch(body)
            with fake.lock:
                drop, fake.drop_creates = fake.drop_creates > 0, max(fake.drop_creates - 1, 0)
            if drop:  # created (and paid for), but the client never hears of it
                return self._drop()
            return self._send(200, batch)
        self._error(404, f"no route {self.path}")

    def do_GET(self):
        fake = self.server.fake
        self._body()
        if self.path.split("?")[0] == "/_stats":  # for a server in another process (bench); not counted
            with fake.lock:
                out = {"counts": dict(fake.counts), "chat_calls": fake.counts["chat"], "inflight": fake.inflight}
            if fake.load is not None:
                out["load"] = fake.load.summary(detail="detail=1" in self.path)
            return self._send(200, out)
        listing = self.path.split("?")[0].rstrip("/").endswith("/v1/batches")
        fake.count_request(("GET " if listing else "") + self.path)  # a list is no create
        if not self._authorized():
            return
        if self._load_fault(chat=False):
            return None
        if listing:
            return self._list_batches()
        m = re.search(r"/files/([^/]+)/content$", self.path)
        if m and m.group(1) in fake.files:
            return self._send(200, None, raw=fake.files[m.group(1)]["data"])
        m = re.search(r"/files/([^/]+)$", self.path)
        if m and m.group(1) in fake.files:
            return self._send(200, fake.files[m.group(1)]["meta"])
        m = re.search(r"/batches/([^/]+)$", self.path)
        if m and m.group(1) in fake.batches:
            return self._send(200, fake.poll_batch(m.group(1)))
        self._error(404, f"no route {self.path}")

    def _list_batches(self):
        """GET /v1/batches as OpenAI serves it: newest first, `limit` (1-100, default 20) per page,
        after the batch id `after`."""
        fake = self.server.fake
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        limit, after = int(query.get("limit", ["20"])[0]), query.get("after", [None])[0]
        with fake.lock:
            ids = list(reversed(fake.batches))  # insertion order is creation order
            start = ids.index(after) + 1 if after in ids else 0
            page = [{k: v for k, v in fake.batches[b].items() if not k.startswith("_")}
                    for b in ids[start:start + max(1, min(limit, 100))]]
        self._send(200, {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                         "last_id": page[-1]["id"] if page else None, "has_more": start + len(page) < len(ids)})

    def _chat(self, body: dict):
        fake = self.server.fake
        with fake.lock:
            fake.inflight += 1
            fake.max_inflight = max(fake.max_inflight, fake.inflight)
        try:
            self._chat_inner(body)
        finally:
            with fake.lock:
                fake.inflight -= 1

    def _chat_inner(self, body: dict):
        fake = self.server.fake
        if self._load_fault(chat=True):  # inside `inflight`: a drawn latency is time in flight
            return None
        fault = fake.take_fault()
        if fake.latency:
            time.sleep(fake.latency)
        if fault is not None:
            kind, opts = fault
            if kind == "429":
                return self._error(429, "Rate limit reached", {"Retry-After": opts.get("retry_after", 0)})
            if kind == "500":
                return self._error(500, "The server had an error")
            if kind == "400":
                return self._error(400, "Invalid request: context length exceeded")
            if kind == "401":
                return self._error(401, "Incorrect API key provided.", code="invalid_api_key")
            if kind == "timeout":
                time.sleep(opts.get("sleep", 5.0))
                return self._error(500, "too late")
            if kind == "drop":
                return self._drop()
            if kind == "malformed":
                return self._send(200, None, raw=b'{"id": "chatcmpl-x", "choices": [{"mess')
        answer = fake.completion(body)
        if fake.load is not None:  # paid once the answer exists, whether or not the client reads it
            fake.load.pay(body)
        self._send(200, answer)

    def _upload(self, body: bytes):
        # multipart/form-data: parse with the stdlib email parser (cgi is deprecated)
        head = f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode()
        msg = email.parser.BytesParser().parsebytes(head + body)
        fields = {}
        for part in msg.get_payload() if msg.is_multipart() else []:
            fields[part.get_param("name", header="content-disposition")] = (
                part.get_filename(), part.get_payload(decode=True))
        filename, data = fields.get("file", (None, None))
        if data is None:
            return self._error(400, "missing file")
        purpose = (fields.get("purpose") or (None, b""))[1].decode()
        self._send(200, self.server.fake.add_file(data, filename or "upload.jsonl", purpose))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many concurrent connects must not be refused
    allow_reuse_address = True
    fake: object  # the cotpd_testing.fake_llm.FakeLLMServer whose state this serves (set by it)
