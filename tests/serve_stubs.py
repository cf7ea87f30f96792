"""Helpers for the proxy's tests: the app served in a thread, a stub upstream that records what it is sent, and a
real Redis server.

The stub speaks the four APIs the proxy compresses (chat completions, completions, responses, Anthropic
messages), streamed or not, with `usage` in every answer; `prefill_tps` sets the time it waits before its
first byte (prompt tokens / prefill_tps, prompt tokens counted as characters / 4), so that the proxy's gate
measures the speed it was given. `script` may answer a chat, responses or messages body itself (to call
tools, for instance; a scripted chat answer is streamed too, when asked). It runs in a thread of the test
process on a free loopback port.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import REDIS, missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc, url: str, seconds: float, what: str) -> None:
    """Poll `url` until it answers 200; fail the test when `proc` exits or `seconds` pass first."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read()[-2000:] if getattr(proc, "stderr", None) else ""
            pytest.fail(f"{what} exited with {proc.returncode}: {err}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not become healthy in {seconds:.0f} s")
        time.sleep(0.3)


@contextmanager
def serving(settings, scorer, http_client=None):
    """The proxy app under uvicorn on a free port, in a thread; yields its base URL."""
    import uvicorn

    from gistify.serve.app import create_app

    settings.port = free_port()
    app = create_app(settings, scorer=scorer, http_client=http_client)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the proxy did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _tokens(body: dict) -> int:
    return max(1, len(json.dumps(body)) // 4)


def answer(path: str, body: dict, text: str) -> dict:
    """A whole answer of the API at `path`, saying `text`."""
    n = _tokens(body)
    if path.endswith("/chat/completions"):
        return {"id": "chatcmpl-stub", "object": "chat.completion", "created": 1, "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": n, "completion_tokens": 2, "total_tokens": n + 2}}  # fmt: skip
    if path.endswith("/completions"):
        return {"id": "cmpl-stub", "object": "text_completion", "created": 1, "model": body.get("model"),
                "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": n, "completion_tokens": 2, "total_tokens": n + 2}}  # fmt: skip
    if path.endswith("/responses"):
        return {"id": "resp_stub", "object": "response", "created_at": 1, "model": body.get("model"),
                "status": "completed", "output": [{"type": "message", "id": "msg_1", "role": "assistant",
                "status": "completed", "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                "usage": {"input_tokens": n, "output_tokens": 2, "total_tokens": n + 2}}  # fmt: skip
    return {"id": "msg_stub", "type": "message", "role": "assistant", "model": body.get("model"),
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": n, "output_tokens": 2}}  # fmt: skip


def stream_events(path: str, body: dict, text: str) -> list[bytes]:
    """The same answer as server-sent events."""
    whole = answer(path, body, text)
    if path.endswith("/chat/completions"):
        base = {k: whole[k] for k in ("id", "object", "created", "model")} | {"object": "chat.completion.chunk"}
        chunks = [
            base | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]},
            base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": whole["usage"]},
        ]
        return [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]
    if path.endswith("/completions"):
        chunks = [whole | {"usage": None}, whole | {"choices": []}]
        return [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]
    if path.endswith("/responses"):
        events = [
            (
                "response.created",
                {
                    "type": "response.created",
                    "sequence_number": 0,
                    "response": whole | {"status": "in_progress", "output": []},
                },
            ),
            (
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "sequence_number": 1,
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": text,
                    "logprobs": [],
                },
            ),
            ("response.completed", {"type": "response.completed", "sequence_number": 2, "response": whole}),
        ]
    else:
        start = whole | {"content": [], "stop_reason": None}
        events = [("message_start", {"type": "message_start", "message": start}),
                  ("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
                  ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": text}}),
                  ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                  ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                     "stop_sequence": None}, "usage": {"output_tokens": 2}}),
                  ("message_stop", {"type": "message_stop"})]  # fmt: skip
    return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events]


def chat_chunks(data: dict) -> list[bytes]:
    """A whole chat answer as OpenAI streams it: a role chunk, the content, each tool call (its id and name, then
    its arguments in two pieces), the finish_reason with the usage, [DONE]."""
    base = {"id": data["id"], "object": "chat.completion.chunk", "created": data["created"], "model": data["model"]}
    choice = data["choices"][0]
    message = choice["message"]

    def chunk(delta: dict, **more) -> dict:
        return base | {"choices": [{"index": 0, "delta": delta, **more}]}

    out = [chunk({"role": "assistant", "content": ""})]
    if message.get("content"):
        out.append(chunk({"content": message["content"]}))
    for i, call in enumerate(message.get("tool_calls") or []):
        name, args = call["function"]["name"], call["function"]["arguments"]
        out.append(chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                          "function": {"name": name, "arguments": ""}}]}))  # fmt: skip
        for piece in (args[: len(args) // 2], args[len(args) // 2 :]):
            out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    out.append(chunk({}, finish_reason=choice["finish_reason"]) | {"usage": data.get("usage")})
    return [b"data: " + json.dumps(c).encode() + b"\n\n" for c in out] + [b"data: [DONE]\n\n"]


class Stub:
    """The stub upstream; `bodies` holds (path, raw body) of every POST, in order."""

    def __init__(self, prefill_tps: float | None = None, script=None, text: str = "stub answer"):
        self.bodies: list[tuple[str, bytes]] = []
        self.prefill_tps, self.script, self.text = prefill_tps, script, text
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: bytes, ctype: str = "application/json"):
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                if self.path.endswith("/models"):
                    self._send(
                        200, json.dumps({"object": "list", "data": [{"id": "stub", "object": "model"}]}).encode()
                    )
                else:
                    self._send(200, b'{"status":"ok"}')

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                with stub.lock:
                    stub.bodies.append((self.path, raw))
                body = json.loads(raw)
                if stub.prefill_tps:
                    time.sleep(_tokens(body) / stub.prefill_tps)
                data = stub.script(self.path, body) if stub.script else None
                if body.get("stream") and (data is None or self.path.endswith("/chat/completions")):
                    events = stream_events(self.path, body, stub.text) if data is None else chat_chunks(data)
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("content-length", str(sum(map(len, events))))
                    self.end_headers()
                    for e in events:
                        self.wfile.write(e)
                        self.wfile.flush()
                    return
                self._send(200, json.dumps(data or answer(self.path, body, stub.text)).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Stub:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def last(self, path: str | None = None) -> dict:
        return json.loads(self.raw(path))

    def raw(self, path: str | None = None) -> bytes:
        return [b for p, b in self.bodies if path is None or p.endswith(path)][-1]


class RedisServer:
    """A redis-server process of its own on a free loopback port, no persistence; stop() and start() again."""

    def __init__(self, tmp_path):
        exe = shutil.which("redis-server")
        if exe is None:
            missing("redis-server", REDIS)
        self.exe, self.dir, self.port, self.proc = exe, tmp_path, free_port(), None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(self.dir)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
