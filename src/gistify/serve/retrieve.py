"""Reversible compression: the model may ask for what was dropped, and the proxy answers it itself.

Each compressed content carries a short handle (`g` and 10 hex digits of its hash): prose ends with a line
"[g1a2b3c4d5e: 412 of 830 tokens kept; gistify_retrieve gives the original]", a JSON object gets a
"gistify" member and a JSON array a last string element that say the same (the JSON still parses). The bytes
depend on the content alone, so they are the same on every turn and every replica.

When a request carries a handle, the proxy offers the model one more tool, `gistify_retrieve(handle, query)`
(appended after the client's own tools, always the same bytes). When the upstream's answer calls it (and only
it), the proxy answers the call from the original, which is in the request itself (the client sent it; the
handle names it), appends the call and its answer to the conversation, and asks the upstream again, up to
`--retrieve-rounds` times; the client sees only the final answer. With a `query`, the answer is the lines of
the original that contain one of its words (the whole original when none does). An answer that calls the
client's tools as well passes to the client without the proxy's calls (streamed: with them). A streamed chat
request is offered the tool too: its events are held until the answer shows whether it calls it
(app.Proxy._relay_sse); streamed responses and messages requests are not offered it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gistify.serve.policy import Outcome, compact

NAME = "gistify_retrieve"
DESCRIPTION = (
    "Some earlier contents (tool results, documents) were shortened; each carries a handle such as "
    "g1a2b3c4d5e. Call this with that handle to read the original text, with `query` to read only the lines "
    "that mention its words."
)
PARAMETERS = {
    "type": "object",
    "properties": {
        "handle": {"type": "string", "description": "the handle of the shortened content"},
        "query": {"type": "string", "description": "optional: words to look for in the original"},
    },
    "required": ["handle"],
}
TOOLS = {
    "chat": {"type": "function", "function": {"name": NAME, "description": DESCRIPTION, "parameters": PARAMETERS}},
    "responses": {"type": "function", "name": NAME, "description": DESCRIPTION, "parameters": PARAMETERS},
    "messages": {"name": NAME, "description": DESCRIPTION, "input_schema": PARAMETERS},
}
_WORD = re.compile(r"\w{3,}")


def note(out: Outcome) -> str:
    return f"{out.handle}: {out.tokens_out} of {out.tokens_in} tokens kept; {NAME} gives the original"


def marked(out: Outcome) -> str:
    """The text to send for a content: with its handle when it was compressed."""
    if not out.handle or out.tokens_out >= out.tokens_in:
        return out.text
    if out.kind == "json":
        data = json.loads(out.text)
        if isinstance(data, dict):  # a member of its own, never one of the client's ("gistify" taken: "_gistify")
            key = next(k for k in ("gistify", "_gistify", "__gistify", "gistify_" + out.handle) if k not in data)
            return compact({**data, key: note(out)})
        if isinstance(data, list):
            return compact([*data, note(out)])
    return f"{out.text}\n[{note(out)}]"


def offer(kind: str, body: dict) -> dict | None:
    """The body with the retrieve tool added, or None where it may not be offered (a streamed responses or
    messages request, a forced or forbidden tool choice, an API without tools)."""
    if kind not in TOOLS or (body.get("stream") and kind != "chat"):
        return None
    choice = body.get("tool_choice")
    if choice is not None and choice != "auto" and choice != {"type": "auto"}:
        return None
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        return None
    if any(_tool_name(t) == NAME for t in tools):
        return body
    return {**body, "tools": [*tools, TOOLS[kind]]}


def _tool_name(tool: Any) -> str | None:
    if not isinstance(tool, dict):
        return None
    return (tool.get("function") or {}).get("name") if "function" in tool else tool.get("name")


def answer(arguments: Any, originals: dict[str, str]) -> str:
    """The tool's answer: the original under the handle, or the lines of it that hold a word of the query."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            arguments = {"handle": arguments}
    if not isinstance(arguments, dict):
        arguments = {}
    handle = str(arguments.get("handle", "")).strip().strip("[]")
    original = originals.get(handle)
    if original is None:
        known = ", ".join(originals) or "none"
        return f"no content has the handle {handle!r} (handles in this conversation: {known})"
    words = {w.lower() for w in _WORD.findall(str(arguments.get("query") or ""))}
    if words:
        lines = [line for line in original.splitlines() if words & {w.lower() for w in _WORD.findall(line)}]
        if lines and len(lines) < len(original.splitlines()):
            return "\n".join(lines)
    return original


def strip(kind: str, data: dict) -> dict:
    """An answer without the proxy's tool calls (when the rounds are spent): what the client may see."""
    if kind == "chat":
        choices = []
        for c in data.get("choices") or []:
            message = c.get("message") or {}
            calls = [t for t in message.get("tool_calls") or [] if (t.get("function") or {}).get("name") != NAME]
            if message.get("tool_calls"):
                c = {**c, "message": {**message, "tool_calls": calls or None}}
            choices.append(c)
        return {**data, "choices": choices}
    if kind == "responses":
        out = [x for x in data.get("output") or [] if not (isinstance(x, dict) and x.get("name") == NAME)]
        return {**data, "output": out}
    if kind == "messages":
        out = [b for b in data.get("content") or [] if not (isinstance(b, dict) and b.get("name") == NAME)]
        return {**data, "content": out}
    return data


def follow_up(kind: str, sent: dict, data: dict, originals: dict[str, str]) -> tuple[dict | None, dict, int]:
    """After an upstream answer `data` to the request `sent`: (the next request, when the answer calls only
    the retrieve tool, else None; the answer to give the client, without the proxy's calls; calls answered)."""
    return {"chat": _chat, "responses": _responses, "messages": _messages}[kind](sent, data, originals)


def _chat(sent, data, originals):
    choices = data.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return None, data, 0
    message = choices[0].get("message") or {}
    calls = message.get("tool_calls") or []
    ours = [c for c in calls if (c.get("function") or {}).get("name") == NAME]
    if not ours:
        return None, data, 0
    if len(ours) < len(calls):  # the client's tools too: the client gets its own calls
        rest = [c for c in calls if c not in ours]
        choice = {**choices[0], "message": {**message, "tool_calls": rest}}
        return None, {**data, "choices": [choice, *choices[1:]]}, 0
    turn = {"role": "assistant", "content": message.get("content"), "tool_calls": calls}
    answers = [{"role": "tool", "tool_call_id": c.get("id"), "content": answer(c["function"].get("arguments"),
               originals)} for c in calls]  # fmt: skip
    return {**sent, "messages": [*sent["messages"], turn, *answers]}, data, len(calls)


def _responses(sent, data, originals):
    output = data.get("output") or []
    calls = [x for x in output if isinstance(x, dict) and x.get("type") == "function_call"]
    ours = [c for c in calls if c.get("name") == NAME]
    if not ours:
        return None, data, 0
    if len(ours) < len(calls):
        return None, {**data, "output": [x for x in output if x not in ours]}, 0
    items = sent.get("input")
    items = [{"role": "user", "content": items}] if isinstance(items, str) else list(items or [])
    calls_in = [{k: c[k] for k in ("type", "call_id", "name", "arguments") if k in c} for c in calls]
    answers = [{"type": "function_call_output", "call_id": c.get("call_id"), "output": answer(c.get("arguments"),
                originals)} for c in calls]  # fmt: skip
    return {**sent, "input": [*items, *calls_in, *answers]}, data, len(calls)


def _messages(sent, data, originals):
    content = data.get("content") or []
    uses = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_use"]
    ours = [b for b in uses if b.get("name") == NAME]
    if not ours:
        return None, data, 0
    if len(ours) < len(uses):
        return None, {**data, "content": [b for b in content if b not in ours]}, 0
    results = [{"type": "tool_result", "tool_use_id": b.get("id"), "content": answer(b.get("input"), originals)}
               for b in ours]  # fmt: skip
    turns = [{"role": "assistant", "content": content}, {"role": "user", "content": results}]
    return {**sent, "messages": [*sent["messages"], *turns]}, data, len(ours)
