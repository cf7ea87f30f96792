"""Server-sent events as the upstream streams them: split into events, read, and given their report at the end.

The proxy relays a stream event by event, as it comes. `Tail` adds the `gistify` report where a client
reading that API looks for the end of an answer: chat and completions, in the chunk that carries the
finish_reason (or a chunk of its own before `[DONE]` when none does); responses, inside
`response.completed`; Anthropic's messages, inside `message_delta`. It also reads the usage (or llama.cpp's
timings) the stream carries, for the gate's measure of the upstream's prefill.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any


async def events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Complete events (without their blank line) from a stream of byte chunks; CRLF read as LF."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            yield event
    if buffer.strip():
        yield buffer.rstrip(b"\n")


def data_of(event: bytes) -> tuple[int | None, Any]:
    """(index of the event's data line, its JSON) — (None, None) without one; the payload b"[DONE]" as is."""
    lines = event.split(b"\n")
    idx = next((i for i, line in enumerate(lines) if line.startswith(b"data:")), None)
    if idx is None:
        return None, None
    payload = lines[idx][5:].strip()
    if payload == b"[DONE]":
        return idx, payload
    try:
        return idx, json.loads(payload)
    except ValueError:
        return None, None


def chat_delta(data: Any) -> dict:
    """The first choice's delta of a chat completion chunk ({} when there is none)."""
    if not isinstance(data, dict):
        return {}
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return {}
    delta = choices[0].get("delta")
    return delta if isinstance(delta, dict) else {}


def accumulate(message: dict, delta: dict) -> None:
    """Add a chat chunk's delta to the whole `message` it is building (content, tool calls by index)."""
    if isinstance(delta.get("content"), str):
        message["content"] = (message.get("content") or "") + delta["content"]
    for call in delta.get("tool_calls") or []:
        if not isinstance(call, dict):
            continue
        calls = message.setdefault("tool_calls", [])
        i = call.get("index", len(calls) - 1 if call.get("id") is None and calls else len(calls))
        while len(calls) <= i:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        whole, fn = calls[i], call.get("function") or {}
        whole["id"] = call.get("id") or whole["id"]
        whole["function"]["name"] += fn.get("name") or ""
        whole["function"]["arguments"] += fn.get("arguments") or ""


class Tail:
    """Rewrites a stream's events for the client: the report at the end, the usage read on the way."""

    def __init__(self, kind: str, report: Callable[[], dict], on_usage: Callable[[dict], None], dumps):
        self.kind, self.report, self.on_usage, self.dumps = kind, report, on_usage, dumps
        self.told = False
        self.last: dict = {}

    def event(self, event: bytes) -> bytes:
        """The event as the client gets it, with its blank line."""
        idx, data = data_of(event)
        if idx is None:
            return event + b"\n\n"
        if data == b"[DONE]":
            if self.told or self.kind not in ("chat", "completion"):
                return event + b"\n\n"
            return self.end() + event + b"\n\n"
        if not isinstance(data, dict):
            return event + b"\n\n"
        self.on_usage(data)
        self.last = data
        if self.told:
            return event + b"\n\n"
        kind, typ = self.kind, data.get("type")
        choices = data.get("choices")
        finished = isinstance(choices, list) and any(isinstance(c, dict) and c.get("finish_reason") for c in choices)
        if kind == "responses" and typ == "response.completed" and isinstance(data.get("response"), dict):
            data["response"]["gistify"] = self.report()
        elif (kind == "messages" and typ == "message_delta") or (kind in ("chat", "completion") and finished):
            data["gistify"] = self.report()
        else:
            return event + b"\n\n"
        self.told = True
        lines = event.split(b"\n")
        lines[idx] = b"data: " + self.dumps(data)
        return b"\n".join(lines) + b"\n\n"

    def end(self) -> bytes:
        """A chunk of its own with the report, for chat and completions streams that carried no finish_reason."""
        if self.told or self.kind not in ("chat", "completion"):
            return b""
        self.told = True
        chunk = {k: self.last[k] for k in ("id", "object", "created", "model") if k in self.last}
        return b"data: " + self.dumps({**chunk, "choices": [], "gistify": self.report()}) + b"\n\n"
