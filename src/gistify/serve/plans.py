"""Where the contents are in each API's requests, and the request to send upstream once they are decided.

Four APIs, one set of rules (policy.py): OpenAI's chat completions (`messages`), completions (`prompt`),
responses (`instructions` and `input` items: messages and function call outputs), and Anthropic's messages
(`system` and `messages` with text and tool_result blocks). In each, the question is the last user message's
text (never compressed); tool results are compressed wherever they are, system prompts and earlier user turns
too; the model's own turns pass unchanged. Only the text of a content is replaced: every other key of a
message, part or block (`cache_control` included) stays as the client wrote it, where it wrote it.

A planner is `plan(body, comp, resolve, mark)`: `resolve(text, question)` gives a content's outcome (the
app first plans with one that only looks, to find what needs compressing), and `mark` says whether the texts
sent carry their retrieval handles (retrieve.py). It returns the body to send (the very same object when
nothing changed) and the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gistify.serve.policy import Compressor, Outcome
from gistify.serve.retrieve import marked

COMPRESSIBLE_ROLES = frozenset({"system", "developer", "user", "tool", "function"})
Resolve = Callable[[str, "str | None"], Outcome]


def text_of(content: Any) -> str:
    """The text of a message content: the string, or its text parts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


@dataclass
class Report:
    """What the proxy did to one request; its `as_dict` is the `gistify` object of a response."""

    method: str
    contents: list[dict] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    originals: dict[str, str] = field(default_factory=dict)  # handle -> the original, for gistify_retrieve
    retrieved: int = 0  # gistify_retrieve calls the proxy answered for this request

    def add(self, where: str, outcome: Outcome, tokens_out: int | None = None) -> None:
        self.tokens_in += outcome.tokens_in
        self.tokens_out += outcome.tokens_out if tokens_out is None else tokens_out
        self.seconds += outcome.seconds
        self.contents.append({"at": where, **outcome.summary()})

    @property
    def compressed(self) -> int:
        return sum(
            c["action"] in ("compressed", "fallback") and c["tokens_out"] < c["tokens_in"] for c in self.contents
        )

    @property
    def fallbacks(self) -> int:
        return sum(c["action"] == "fallback" for c in self.contents)

    @property
    def gate_skips(self) -> int:
        return sum(c["action"] == "gate" for c in self.contents)

    def as_dict(self) -> dict:
        out = {
            "method": self.method if self.compressed else "none",
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "compressed": self.compressed,
            "fallbacks": self.fallbacks,
            "seconds": round(self.seconds, 4),
            "contents": self.contents,
        }
        if self.retrieved:
            out["retrieved"] = self.retrieved
        return out


class _Plan:
    """One request's planning: the report, and the text to send for each content."""

    def __init__(self, comp: Compressor, resolve: Resolve | None, mark: bool):
        self.comp, self.resolve, self.mark = comp, resolve or comp.content, mark
        self.report = Report(comp.settings.method)
        self.changed = False

    def passing(self, where: str, text: str, action: str) -> None:
        n = self.comp.count(text)
        self.report.add(where, Outcome(text, n, n, action))

    def content(self, where: str, text: str, question: str | None) -> str:
        """The text to send for one compressible content."""
        out = self.resolve(text, question)
        sent = marked(out) if self.mark else out.text
        n_out = None
        if out.handle and out.action != "pending":
            self.report.originals[out.handle] = text
            if sent != out.text:
                n_out = self.comp.count(sent)
        self.report.add(where, out, n_out)
        if sent != text:
            self.changed = True
        return sent

    def parts(self, where: str, content: list, question: str | None, text_type: str = "text") -> list:
        """A list of content parts with each text part decided; other parts (and keys) as they are."""
        parts = []
        for k, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == text_type and isinstance(part.get("text"), str):
                sent = self.content(f"{where}[{k}]", part["text"], question)
                if sent != part["text"]:
                    part = {**part, "text": sent}
            parts.append(part)
        return parts


# -- OpenAI chat completions ----------------------------------------------------------------------------------


def plan_chat(body: dict, comp: Compressor, resolve: Resolve | None = None, mark: bool = False) -> tuple[dict, Report]:
    """The chat request to send upstream (the same object when nothing changed) and what was done."""
    p = _Plan(comp, resolve, mark)
    messages = body["messages"]
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    question = text_of(messages[last_user].get("content")) if last_user is not None else None
    new_messages = []
    for i, m in enumerate(messages):
        content = m.get("content")
        if i == last_user or m.get("role") not in COMPRESSIBLE_ROLES:
            p.passing(f"messages[{i}]", text_of(content), "question" if i == last_user else "other_role")
        elif isinstance(content, str):
            sent = p.content(f"messages[{i}]", content, question)
            if sent != content:
                m = {**m, "content": sent}
        elif isinstance(content, list):
            parts = p.parts(f"messages[{i}].content", content, question)
            if parts != content:
                m = {**m, "content": parts}
        new_messages.append(m)
    return ({**body, "messages": new_messages} if p.changed else body), p.report


# -- OpenAI completions ---------------------------------------------------------------------------------------


def split_prompt(prompt: str) -> tuple[str, str, str]:
    """(context, blank line, question) of a completion prompt: the question follows the last blank line."""
    cut = prompt.rfind("\n\n")
    if cut < 0:
        return "", "", prompt
    return prompt[:cut], "\n\n", prompt[cut + 2 :]


def plan_completion(body: dict, comp: Compressor, resolve: Resolve | None = None, mark: bool = False
                    ) -> tuple[dict, Report]:  # fmt: skip
    """A text prompt's last paragraph (after the last blank line) is its question, kept verbatim; what comes
    before is compressed as one content. Token-id prompts pass unchanged. No tools here: never marked."""
    p = _Plan(comp, resolve, False)
    prompt = body["prompt"]
    prompts = [prompt] if isinstance(prompt, str) else prompt
    out_prompts = []
    for k, text in enumerate(prompts):
        where = "prompt" if isinstance(prompt, str) else f"prompt[{k}]"
        if not isinstance(text, str):
            out_prompts.append(text)
            continue
        context, blank, question = split_prompt(text)
        if context:
            context = p.content(where, context, question)
        p.passing(where + ".question", question, "question")
        out_prompts.append(context + blank + question)
    if not p.changed:
        return body, p.report
    return {**body, "prompt": out_prompts[0] if isinstance(prompt, str) else out_prompts}, p.report


# -- OpenAI responses -----------------------------------------------------------------------------------------


def _is_message(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type", "message") == "message" and isinstance(item.get("role"), str)


def plan_responses(body: dict, comp: Compressor, resolve: Resolve | None = None, mark: bool = False
                   ) -> tuple[dict, Report]:  # fmt: skip
    """`instructions`, earlier message items and function call outputs are compressed; the last user message
    item (or a string `input`) is the question."""
    p = _Plan(comp, resolve, mark)
    items = body.get("input")
    if isinstance(items, str):
        question = items
        p.passing("input", items, "question")
        items = None
    else:
        items = items if isinstance(items, list) else []
        last_user = max((i for i, x in enumerate(items) if _is_message(x) and x["role"] == "user"), default=None)
        question = text_of(items[last_user].get("content")) if last_user is not None else None
    new = dict(body)
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        new["instructions"] = p.content("instructions", body["instructions"], question)
    if items is not None:
        new_items = []
        for i, x in enumerate(items):
            where = f"input[{i}]"
            if _is_message(x):
                content = x.get("content")
                if i == last_user or x["role"] not in COMPRESSIBLE_ROLES:
                    p.passing(where, text_of(content), "question" if i == last_user else "other_role")
                elif isinstance(content, str):
                    x = {**x, "content": p.content(where, content, question)}
                elif isinstance(content, list):
                    x = {**x, "content": p.parts(where + ".content", content, question, "input_text")}
            elif isinstance(x, dict) and x.get("type") == "function_call_output":
                output = x.get("output")
                if isinstance(output, str):
                    x = {**x, "output": p.content(where + ".output", output, question)}
                elif isinstance(output, list):
                    x = {**x, "output": p.parts(where + ".output", output, question, "input_text")}
            new_items.append(x)
        new["input"] = new_items
    return (new if p.changed else body), p.report


# -- Anthropic messages ---------------------------------------------------------------------------------------


def _anthropic_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text"
                         and isinstance(b.get("text"), str))  # fmt: skip
    return ""


def plan_messages(body: dict, comp: Compressor, resolve: Resolve | None = None, mark: bool = False
                  ) -> tuple[dict, Report]:  # fmt: skip
    """Anthropic's messages: `system` and tool_result blocks are compressed wherever they are, user text
    blocks too except in the question (the last user message with text); assistant turns pass. Blocks keep
    every other key, `cache_control` included, in place."""
    p = _Plan(comp, resolve, mark)
    messages = body["messages"]
    asking = [i for i, m in enumerate(messages) if m.get("role") == "user" and _anthropic_text(m.get("content"))]
    last_user = asking[-1] if asking else None
    question = _anthropic_text(messages[last_user].get("content")) if last_user is not None else None
    new = dict(body)
    system = body.get("system")
    if isinstance(system, str) and system:
        new["system"] = p.content("system", system, question)
    elif isinstance(system, list):
        new["system"] = p.parts("system", system, question)

    def tool_result(where: str, block: dict) -> dict:
        inner = block.get("content")
        if isinstance(inner, str):
            return {**block, "content": p.content(where + ".content", inner, question)}
        if isinstance(inner, list):
            return {**block, "content": p.parts(where + ".content", inner, question)}
        return block

    new_messages = []
    for i, m in enumerate(messages):
        where, content = f"messages[{i}]", m.get("content")
        if m.get("role") != "user":
            p.passing(where, _anthropic_text(content), "other_role")
        elif isinstance(content, str):
            if i == last_user:
                p.passing(where, content, "question")
            else:
                m = {**m, "content": p.content(where, content, question)}
        elif isinstance(content, list):
            blocks = []
            for k, b in enumerate(content):
                if isinstance(b, dict) and b.get("type") == "tool_result":
                    b = tool_result(f"{where}.content[{k}]", b)
                elif isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str):
                    if i == last_user:
                        p.passing(f"{where}.content[{k}]", b["text"], "question")
                    else:
                        sent = p.content(f"{where}.content[{k}]", b["text"], question)
                        b = {**b, "text": sent} if sent != b["text"] else b
                blocks.append(b)
            m = {**m, "content": blocks}
        new_messages.append(m)
    new["messages"] = new_messages
    return (new if p.changed else body), p.report


PLANNERS = {"chat": plan_chat, "completion": plan_completion, "responses": plan_responses, "messages": plan_messages}
