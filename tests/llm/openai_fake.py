"""A loopback HTTP server speaking the OpenAI Chat Completions API, for tests and the bench.

It answers `POST /v1/chat/completions` and Azure OpenAI's deployment form
`POST /openai/deployments/{deployment}/chat/completions?api-version=...` with OpenAI's JSON shape
(`id`, `choices`, `usage`, ...) and an `x-request-id` header, records every request it gets
(method, path, query, headers, body), and plays programmed faults in order, one per request:
`Fault(status=429, retry_after="1")`, `Fault(status=500)`, `Fault(delay=2.0)` (answers late).

    python tests/llm/openai_fake.py [PORT]     serve until interrupted (prints the base URL first);
                                               GET /_fake/count answers {"count": requests so far}
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_REPLY = "Hello from the loopback model."


@dataclass(frozen=True)
class Fault:
    status: int | None = None  # answer with this error status
    retry_after: str | None = None  # ... and this Retry-After header
    delay: float = 0.0  # wait this long before answering (normally, unless `status`)
    body: dict[str, Any] | None = None  # answer 200 with this JSON instead of a chat completion


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeOpenAI:
    """The server's behaviour and what it saw; change fields between requests (under `lock`)."""

    reply: str | Callable[[dict[str, Any]], str] = DEFAULT_REPLY
    use_all_tokens: bool = False  # completion_tokens = the request's max_tokens (for budget tests)
    always: Fault | None = None  # a fault for every request (after the scripted ones)
    script: list[Fault] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def reset(self) -> None:
        with self.lock:
            self.reply, self.use_all_tokens, self.always = DEFAULT_REPLY, False, None
            self.script.clear()
            self.requests.clear()

    def next_fault(self) -> Fault | None:
        with self.lock:
            return self.script.pop(0) if self.script else self.always

    def answer(self, body: dict[str, Any], model: str, number: int) -> dict[str, Any]:
        reply = self.reply(body) if callable(self.reply) else self.reply
        prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
        completion = int(body.get("max_tokens") or 16) if self.use_all_tokens else len(reply) // 4 + 1
        return {
            "id": f"chatcmpl-fake{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt // 4 + 1,
                "completion_tokens": completion,
                "total_tokens": prompt // 4 + 1 + completion,
            },
        }

    # -- serving ---------------------------------------------------------------------------------
    def start(self, port: int = 0) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake.handle(self)

            def do_GET(self) -> None:  # for a fake in another process: how many requests it got
                if self.path != "/_fake/count":
                    return fake._send(self, 404, _error("no such route", "invalid_request_error"), 0)
                with fake.lock:
                    count = len(fake.requests)
                fake._send(self, 200, {"count": count}, 0)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        parsed = urllib.parse.urlsplit(h.path)
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        with self.lock:
            self.requests.append(
                Recorded(
                    "POST",
                    parsed.path,
                    urllib.parse.parse_qs(parsed.query),
                    {k.lower(): v for k, v in h.headers.items()},
                    body,
                )
            )
            number = len(self.requests)
        path = parsed.path
        if path == "/v1/chat/completions":
            model = str(body.get("model", ""))
        elif path.startswith("/openai/deployments/") and path.endswith("/chat/completions"):
            model = path.removeprefix("/openai/deployments/").removesuffix("/chat/completions")
            if "api-version" not in urllib.parse.parse_qs(parsed.query):
                return self._send(h, 400, _error("missing api-version", "invalid_request_error"), number)
        else:
            return self._send(h, 404, _error("no such route", "invalid_request_error"), number)
        fault = self.next_fault()
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.body is not None:
            return self._send(h, 200, fault.body, number)
        if fault is not None and fault.status is not None:
            headers = {"retry-after": fault.retry_after} if fault.retry_after is not None else {}
            code = "rate_limit_exceeded" if fault.status == 429 else "server_error"
            error = _error("fake upstream says no: secret-upstream-detail", code)
            return self._send(h, fault.status, error, number, headers)
        self._send(h, 200, self.answer(body, model, number), number)

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler,
        status: int,
        payload: dict[str, Any],
        number: int,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(payload).encode()
        lines = [f"HTTP/1.1 {status} {h.responses.get(status, ('',))[0]}"]
        fields = {
            "content-type": "application/json",
            "content-length": str(len(data)),
            "x-request-id": f"req_fake{number}",
            **(headers or {}),
        }
        lines += [f"{k}: {v}" for k, v in fields.items()]
        try:
            h.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
            h.wfile.flush()
        except OSError:  # the client gave up (a timeout test)
            h.close_connection = True


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "fake_error", "param": None, "code": code}}


if __name__ == "__main__":
    server = FakeOpenAI().start(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
