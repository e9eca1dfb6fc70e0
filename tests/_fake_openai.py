"""A fake OpenAI-compatible server on loopback, for the real `openai` SDK to talk to.

It answers `POST /v1/chat/completions` the way the API does, whole (`chat.completion`) or
streamed (`chat.completion.chunk` server-sent events, `data: [DONE]` last, a usage chunk when
`stream_options.include_usage` asks for it), so the SDK and the official OpenTelemetry
instrumentation run their real code paths. A stream can be held half-way (`hold_streams_after`)
until the test releases it, which is how a test clicks while an answer is still streaming.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

#: The longest a held stream waits for `release()`: a test that forgets must not hang forever.
HOLD_LIMIT_SECONDS = 30.0


class FakeOpenAI:
    """Start it (a context manager), point `OpenAI(base_url=fake.base_url)` at it."""

    def __init__(self, answer: str = "Paris is the capital of France.") -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._hold_after: int | None = None
        self._released = threading.Event()
        #: Set when a stream has sent its first chunks and waits for `release()`.
        self.holding = threading.Event()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake server first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def hold_streams_after(self, chunks: int) -> None:
        """Streams send `chunks` content chunks, then wait for `release()`."""
        self._hold_after = chunks
        self._released.clear()
        self.holding.clear()

    def release(self) -> None:
        self._released.set()

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()  # no held stream outlives the test
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the API ------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length) or b"{}")
        with self._lock:
            self.requests.append(body)
        if handler.path.rstrip("/") != "/v1/chat/completions":
            self._json(handler, 404, {"error": {"message": "not found", "type": "invalid_request"}})
            return
        completion_id = f"chatcmpl-fake-{next(self._ids)}"
        model = str(body.get("model", "gpt-4o-mini"))
        words = self.answer.split(" ")
        usage = {
            "prompt_tokens": 7,
            "completion_tokens": len(words),
            "total_tokens": 7 + len(words),
        }
        if not body.get("stream"):
            self._json(
                handler,
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": self.answer},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()  # HTTP/1.0: the body ends when the connection closes

        def send(event: dict[str, Any]) -> None:
            handler.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            handler.wfile.flush()

        def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            send({**head, "choices": [choice]})

        head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        chunk({"role": "assistant", "content": ""})
        for index, word in enumerate(words):
            if index == self._hold_after:
                self.holding.set()
                self._released.wait(HOLD_LIMIT_SECONDS)
            chunk({"content": word if index == 0 else " " + word})
        chunk({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            send({**head, "choices": [], "usage": usage})
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()

    @staticmethod
    def _json(handler: BaseHTTPRequestHandler, status: int, document: dict[str, Any]) -> None:
        payload = json.dumps(document).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
