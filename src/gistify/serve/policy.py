"""What the proxy compresses, how, and when it had better not.

The rules, in the order a message content meets them:

1. The last user message is the question: never compressed, and it steers the compression of the others.
   Assistant turns (and any role but system, developer, user, tool and function) pass unchanged: they are
   the model's own words and may carry tool calls. Non-text content parts (images, audio) pass unchanged;
   each text part is judged on its own.
2. A content of at most `min_tokens` tokens (the scorer's tokenizer) passes unchanged: too little to save.
3. A content whose whole text is JSON passes unchanged ("structured"): deleting tokens breaks JSON, and the
   library does not compress structure yet. In prose, fenced code blocks and embedded JSON objects or arrays
   are protected: given to the library as character spans that it keeps verbatim; the prose is compressed.
4. The break-even gate (`Gate`) weighs the tokens saved against the compressor's time; "skip" passes it
   unchanged.
5. The fidelity guard: the compressed text is checked with `fidelity.risk`. When a negation or number was
   dropped from a kept clause, a term of the question was lost, or the share of critical items lost exceeds
   `max_risk`, the content is compressed again at a higher budget (halfway to keeping everything); if that is
   still risky, it is sent uncompressed. Either way it counts as a fallback.

Every decision about a content is remembered under the hash of its text (an LRU cache): a system prompt or
an earlier turn that recurs in later requests gets the very same bytes, whatever the later question, so the
upstream's prompt cache keeps hitting. The first question that met the content shaped its compression.

Over 400 lines on purpose: these rules and the cache that makes them deterministic are one decision, read in
one place; the gate (gate.py) and the risk report (fidelity.py) stand apart because they are pure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from gistify.serve.fidelity import risk
from gistify.serve.gate import Gate, GateDecision
from gistify.serve.settings import Settings

log = logging.getLogger("gistify.serve")
COMPRESSIBLE_ROLES = frozenset({"system", "developer", "user", "tool", "function"})
_FENCE = re.compile(r"(?ms)^[ \t]*(```|~~~)[^\n]*\n.*?^[ \t]*\1[ \t]*$")
_JSON_ATTEMPTS = 256  # decode attempts per content: bounds the cost on text full of brackets


@dataclass
class Outcome:
    """What happened to one content: the text sent upstream and why."""

    text: str
    tokens_in: int
    tokens_out: int
    action: str  # compressed, fallback, short, structured, gate, failed, question, other_role
    cached: bool = False
    seconds: float = 0.0
    fallback: str | None = None  # higher_keep or uncompressed
    risk: dict | None = None  # score, meaning_changed and what was lost, of the text sent
    gate: GateDecision | None = None

    def summary(self) -> dict[str, Any]:
        out = {"action": self.action, "tokens_in": self.tokens_in, "tokens_out": self.tokens_out}
        if self.cached:
            out["cached"] = True
        if self.seconds:
            out["seconds"] = round(self.seconds, 4)
        if self.fallback:
            out["fallback"] = self.fallback
        if self.risk is not None:
            out["risk"] = self.risk
        if self.gate is not None:
            out["gate"] = asdict(self.gate)
        return out


def structure_spans(text: str) -> list[tuple[int, int]] | None:
    """Character spans to keep verbatim: fenced code blocks and JSON objects or arrays inside prose.

    None when the whole text is JSON (send it unchanged). Only objects and arrays of at least two members'
    worth of text (8 characters) count: "[1]" or "{x}" in prose is not worth pinning.
    """
    stripped = text.strip()
    if stripped[:1] in "{[" and stripped[-1:] in "}]":
        try:
            json.loads(stripped)
            return None
        except (ValueError, RecursionError):
            pass
    spans = [m.span() for m in _FENCE.finditer(text)]
    decoder = json.JSONDecoder()
    pos, attempts = 0, 0
    while attempts < _JSON_ATTEMPTS:
        starts = [i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0]
        if not starts:
            break
        i = min(starts)
        inside = next((e for s, e in spans if s <= i < e), None)
        if inside is not None:
            pos = inside
            continue
        attempts += 1
        try:
            _, end = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):  # not JSON, or nested past Python's recursion limit
            pos = i + 1
            continue
        if end - i >= 8:
            spans.append((i, end))
        pos = end
    return sorted(spans)


class _LRU:
    """A bounded map from content hash to Outcome; thread-safe."""

    def __init__(self, size: int):
        self.size, self.data, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key: str) -> Outcome | None:
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        return None

    def put(self, key: str, value: Outcome) -> None:
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


@dataclass
class Compressor:
    """Applies the rules to one content at a time, with the scorer, the gate and the cache.

    Thread-safe: contents are counted in parallel, but one compression runs at a time (the scorer is one
    model; two at once would only share the same cores). Callers run it off the event loop.
    """

    settings: Settings
    scorer: Any
    metrics: Any = None
    gate: Gate | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        self.cache = _LRU(self.settings.cache_entries)

    # -- measuring -----------------------------------------------------------------------------------------

    def count(self, text: str) -> int:
        """Tokens of `text` by the scorer's tokenizer (the one the budget is counted in)."""
        return len(self.scorer.tokenizer.encode(text, add_special_tokens=False)) if text else 0

    def measure(self, tokens: int = 1000) -> float:
        """The compressor's cost in ms per 1k tokens, timed on a made-up text after one warm-up run."""
        sentence = (
            "On day {i} the team moved {i} crates of parts from the north depot to the river warehouse, "
            "and the manager noted that the loading took longer than planned because of the rain. "
        )
        text, i = "", 0
        while self.count(text) < tokens:
            text += sentence.format(i=i)
            i += 1
        n = self.count(text)
        self._compress(text[: len(text) // 4], "What did the team move?", self._budget())  # warm-up
        t0 = time.perf_counter()
        self._compress(text, "What did the team move?", self._budget())
        return (time.perf_counter() - t0) * 1e6 / n

    def _budget(self, higher: bool = False) -> dict[str, float | int]:
        s = self.settings
        if s.tokens is not None:
            return {"tokens": s.tokens * 2 if higher else s.tokens}
        return {"keep": (1 + s.keep) / 2 if higher else s.keep}

    def _target(self, n: int) -> int:
        s = self.settings
        return min(n, s.tokens) if s.tokens is not None else min(n, math.ceil(n * s.keep))

    # -- compressing ---------------------------------------------------------------------------------------

    def _compress(self, text: str, question: str | None, budget: dict, protect=()) -> Any:
        import gistify

        s = self.settings
        try:
            return gistify.compress(
                text,
                question=question,
                method=s.method,
                scorer=self.scorer,
                protect=list(protect),
                protect_numbers=s.protect_numbers,
                protect_negations=s.protect_negations,
                protect_identifiers=s.protect_identifiers,
                # code and JSON spans are protected: when they alone are over the budget, keep them all (the
                # message is then over budget, never changed in meaning) rather than fail the compression
                on_protected_overflow="keep",
                fallback="off",  # the proxy runs its own fallback (rule 5), with its metrics
                **budget,
            )
        finally:
            self.scorer.forget()  # the scorer keeps every text's statistics; a server sees unbounded texts

    def _risk(self, source: str, result: Any, question: str | None) -> tuple[bool, dict]:
        r = risk(source, result.text, question)
        brief = {
            "score": r["score"],
            "meaning_changed": r["meaning_changed"],
            "lost": {k: len(v) for k, v in r["lost"].items()},
        }
        if r["changed"]:
            brief["changed"] = r["changed"][:5]
        if r["question_lost"]:
            brief["question_lost"] = r["question_lost"]
        return r["meaning_changed"] or r["score"] > self.settings.max_risk, brief

    def quick(self, text: str) -> Outcome | None:
        """The outcome when it costs no compression: a short content, or one seen before; else None."""
        n = self.count(text)
        if n <= self.settings.min_tokens:
            return Outcome(text, n, n, "short")
        hit = self.cache.get(self._key(text))
        if hit is None:
            return None
        self._count_cache("hit")
        return replace(hit, cached=True, seconds=0.0)

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def content(self, text: str, question: str | None) -> Outcome:
        """The outcome for one compressible content (rules 2 to 5), from the cache when it was seen before."""
        quick = self.quick(text)
        if quick is not None:
            return quick
        key = self._key(text)
        with self._lock:  # a concurrent request with the same content waits here, then hits the cache
            hit = self.cache.get(key)
            if hit is None:
                self._count_cache("miss")
                out = self._decide(text, self.count(text), question)
                self.cache.put(key, out)
                return out
        self._count_cache("hit")
        return replace(hit, cached=True, seconds=0.0)

    def _count_cache(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.cache.labels(result).inc()

    def _decide(self, text: str, n: int, question: str | None) -> Outcome:
        spans = structure_spans(text)
        if spans is None:
            return Outcome(text, n, n, "structured")
        decision = self.gate.decide(n, self._target(n)) if self.gate else None
        if decision is not None:
            self._count_gate(decision)
            if not decision.compress:
                return Outcome(text, n, n, "gate", gate=decision)
        t0 = time.perf_counter()
        try:
            result = self._compress(text, question, self._budget(), spans)
            risky, brief = self._risk(text, result, question)
            fallback = None
            if risky:
                fallback = "higher_keep"
                result = self._compress(text, question, self._budget(higher=True), spans)
                risky, brief = self._risk(text, result, question)
                if risky:
                    fallback = "uncompressed"
        except Exception as e:  # a content the compressor cannot take goes upstream as it came
            log.warning("compression failed, content sent unchanged: %s: %s", type(e).__name__, e)
            if self.metrics is not None:
                self.metrics.errors.labels("compress_failed").inc()
            return Outcome(text, n, n, "failed", seconds=time.perf_counter() - t0, gate=decision)
        seconds = time.perf_counter() - t0
        if self.metrics is not None:
            self.metrics.compress_seconds.observe(seconds)
            if fallback:
                self.metrics.fallbacks.labels(fallback).inc()
        if fallback == "uncompressed":
            return Outcome(text, n, n, "fallback", seconds=seconds, fallback=fallback, risk=brief, gate=decision)
        out_n = self.count(result.text)
        action = "fallback" if fallback else "compressed"
        return Outcome(result.text, n, out_n, action, seconds=seconds, fallback=fallback, risk=brief, gate=decision)

    def _count_gate(self, d: GateDecision) -> None:
        if self.metrics is None:
            return
        verdict = "compress" if d.compress else "skip"
        m = self.metrics
        m.gate_decisions.labels(verdict).inc()
        m.gate_saved_tokens.labels(verdict).inc(d.saved_tokens)
        m.gate_usd.labels(verdict).inc(d.usd_saved)
        m.gate_prefill_seconds.labels(verdict).inc(d.prefill_s_saved)
        m.gate_compress_seconds.labels(verdict).inc(d.compress_s)


# -- requests ------------------------------------------------------------------------------------------------


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

    def add(self, where: str, outcome: Outcome) -> None:
        self.tokens_in += outcome.tokens_in
        self.tokens_out += outcome.tokens_out
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

    def as_dict(self) -> dict:
        return {
            "method": self.method if self.compressed else "none",
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "compressed": self.compressed,
            "fallbacks": self.fallbacks,
            "seconds": round(self.seconds, 4),
            "contents": self.contents,
        }


def _passing(comp: Compressor, text: str, action: str) -> Outcome:
    n = comp.count(text)
    return Outcome(text, n, n, action)


Resolve = Callable[[str, "str | None"], Outcome]


def plan_chat(body: dict, comp: Compressor, resolve: Resolve | None = None) -> tuple[dict, Report]:
    """The chat request to send upstream (the same object when nothing changed) and what was done.

    `resolve(text, question)` gives each compressible content's outcome (default: `comp.content`); the app
    first plans with a resolver that only looks (`Compressor.quick`), to find what needs compressing.
    """
    resolve = resolve or comp.content
    report = Report(comp.settings.method)
    messages = body["messages"]
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    question = text_of(messages[last_user].get("content")) if last_user is not None else None
    changed = False
    new_messages = []
    for i, m in enumerate(messages):
        content = m.get("content")
        if i == last_user or m.get("role") not in COMPRESSIBLE_ROLES:
            action = "question" if i == last_user else "other_role"
            report.add(f"messages[{i}]", _passing(comp, text_of(content), action))
            new_messages.append(m)
            continue
        if isinstance(content, str):
            out = resolve(content, question)
            report.add(f"messages[{i}]", out)
            if out.text != content:
                m, changed = {**m, "content": out.text}, True
        elif isinstance(content, list):
            parts = []
            for k, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                    out = resolve(part["text"], question)
                    report.add(f"messages[{i}].content[{k}]", out)
                    if out.text != part["text"]:
                        part, changed = {**part, "text": out.text}, True
                parts.append(part)
            if parts != content:
                m = {**m, "content": parts}
        new_messages.append(m)
    return ({**body, "messages": new_messages} if changed else body), report


def split_prompt(prompt: str) -> tuple[str, str, str]:
    """(context, blank line, question) of a completion prompt: the question follows the last blank line."""
    cut = prompt.rfind("\n\n")
    if cut < 0:
        return "", "", prompt
    return prompt[:cut], "\n\n", prompt[cut + 2 :]


def plan_completion(body: dict, comp: Compressor, resolve: Resolve | None = None) -> tuple[dict, Report]:
    """The completion request to send upstream and what was done. A text prompt's last paragraph (after the
    last blank line) is its question, kept verbatim; what comes before is compressed as one content. Token-id
    prompts pass unchanged."""
    resolve = resolve or comp.content
    report = Report(comp.settings.method)
    prompt = body["prompt"]
    prompts = [prompt] if isinstance(prompt, str) else prompt
    out_prompts, changed = [], False
    for k, p in enumerate(prompts):
        where = "prompt" if isinstance(prompt, str) else f"prompt[{k}]"
        if not isinstance(p, str):
            out_prompts.append(p)
            continue
        context, blank, question = split_prompt(p)
        if context:
            out = resolve(context, question)
            report.add(where, out)
            changed |= out.text != context
            context = out.text
        report.add(where + ".question", _passing(comp, question, "question"))
        out_prompts.append(context + blank + question)
    if not changed:
        return body, report
    return {**body, "prompt": out_prompts[0] if isinstance(prompt, str) else out_prompts}, report
