"""What the proxy compresses, how, and when it had better not.

The rules, in the order a message content meets them (plans.py finds the contents in each API's requests):

1. The last user message is the question: never compressed, and it steers the compression of the others.
   Assistant turns pass unchanged: they are the model's own words and may carry tool calls. Non-text content
   parts (images, audio) pass unchanged; each text part is judged on its own.
2. A content of at most `min_tokens` tokens (the scorer's tokenizer) passes unchanged: too little to save.
3. A content whose whole text is JSON (the most common tool result) goes through the library's
   structure-aware path (`structure="auto"`, minified first): members and elements are kept or dropped
   whole, so the result parses and every kept key is intact; an array that lost elements ends with a string
   that counts them ("… 37 more items"). In prose, fenced code blocks and embedded JSON are protected: given
   to the library as character spans that it keeps verbatim; the prose is compressed.
4. The break-even gate (`gate.Gate`) weighs the tokens saved against the compressor's time, at the
   upstream's measured prefill speed; "gate" passes it unchanged.
5. The fidelity guard is the library's: `gistify.compress(fallback=..., max_risk=...)` checks its result with
   its risk report (gistify.text.fidelity) and, over `max_risk`, compresses again halfway to keeping
   everything; if that is still over, the content is sent uncompressed. Either way it counts as a fallback.
   In JSON a member or element dropped whole is counted, not a risk (the count says it is gone); what the
   risk report reads there is the words dropped inside the strings that were kept.

Every decision is kept in the store (store.py) under the content's hash and the settings' fingerprint: a
system prompt or an earlier turn that recurs gets the very same bytes, whatever the later question, on every
replica that shares the store, so the upstream's prompt cache keeps hitting. The first question that met the
content shaped its compression. A gate "skip" made before the upstream's speed was measured is not kept: the
next turn decides again on measured figures.

Each compressed content gets a handle (`g` and 10 hex digits of its hash): with retrieval on, the text sent
carries it (retrieve.py), and the model may ask for the original back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from gistify.budget import Budget
from gistify.serve.gate import Gate, GateDecision
from gistify.serve.settings import Settings
from gistify.serve.store import MemoryStore
from gistify.text.fidelity import risk as risk_report
from gistify.text.options import TextOptions
from gistify.text.tokens import counter

log = logging.getLogger("gistify.serve")
_FENCE = re.compile(r"(?ms)^[ \t]*(```|~~~)[^\n]*\n.*?^[ \t]*\1[ \t]*$")
_JSON_ATTEMPTS = 256  # decode attempts per content: bounds the cost on text full of brackets
MORE = "… {n} more items"  # the string that ends an array that lost n elements


@dataclass
class Outcome:
    """What happened to one content: the text sent upstream and why."""

    text: str
    tokens_in: int
    tokens_out: int
    action: str  # compressed, fallback, short, gate, failed, question, other_role
    cached: bool = False
    seconds: float = 0.0
    fallback: str | None = None  # higher_keep or uncompressed
    risk: dict | None = None  # the library's risk report of the text sent, in brief
    gate: dict | None = None  # the gate's figures (GateDecision as a dict)
    kind: str = "prose"  # prose or json
    handle: str | None = None  # for a compressed content: the key its original is retrieved by

    def summary(self) -> dict[str, Any]:
        out = {"action": self.action, "tokens_in": self.tokens_in, "tokens_out": self.tokens_out}
        if self.kind != "prose":
            out["kind"] = self.kind
        for name in ("cached", "fallback", "risk", "gate", "handle"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        if self.seconds:
            out["seconds"] = round(self.seconds, 4)
        return out

    def to_store(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("cached", "seconds") and v is not None}

    @classmethod
    def from_store(cls, data: dict) -> Outcome:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names}, cached=True)


def is_json(text: str) -> bool:
    """Whether the whole text (spaces aside) is a JSON object or array."""
    stripped = text.strip()
    if stripped[:1] not in "{[" or stripped[-1:] not in "}]":
        return False
    try:
        json.loads(stripped)
        return True
    except (ValueError, RecursionError):
        return False


def structure_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of prose to keep verbatim: fenced code blocks and JSON objects or arrays inside it.

    Only objects and arrays of at least two members' worth of text (8 characters) count: "[1]" or "{x}" in
    prose is not worth pinning. (A content that is JSON as a whole is compressed structurally instead.)
    """
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


# -- JSON -----------------------------------------------------------------------------------------------------


def _strings(x: Any, out: list[str]) -> list[str]:
    """The string values (not keys) of a JSON value, in document order."""
    if isinstance(x, str):
        out.append(x)
    elif isinstance(x, dict):
        for v in x.values():
            _strings(v, out)
    elif isinstance(x, list):
        for v in x:
            _strings(v, out)
    return out


def _subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(w in it for w in short)


def json_changed_strings(source: Any, output: Any) -> tuple[str, str]:
    """The kept strings of `output` that lost words, and their originals in `source`, each joined by newlines.

    Elements and members are dropped whole by the structure-aware path, and a long string may lose words;
    the strings of the output are matched, in order, to the first later source string they are a word
    subsequence of. What a whole dropped member lost is not in these texts: only what a kept string lost."""
    src, out = _strings(source, []), _strings(output, [])
    a, b, j = [], [], 0
    for s in out:
        words = s.split()
        while j < len(src) and not (src[j] == s or _subsequence(words, src[j].split())):
            j += 1
        if j == len(src):
            break
        if src[j] != s:
            a.append(src[j])
            b.append(s)
        j += 1
    return "\n".join(a), "\n".join(b)


def count_trimmed(source: Any, output: Any) -> Any:
    """`output` with every array that lost elements ending in a string that counts them (`MORE`).

    Arrays are found by walking both values together through object keys, and through array elements where
    both arrays have the same length (otherwise which element became which is not known, and the walk stops
    there)."""
    if isinstance(source, dict) and isinstance(output, dict):
        return {k: count_trimmed(source[k], v) if k in source else v for k, v in output.items()}
    if isinstance(source, list) and isinstance(output, list):
        if len(output) == len(source):
            return [count_trimmed(s, o) for s, o in zip(source, output, strict=True)]
        if len(output) < len(source):
            return [*output, MORE.format(n=len(source) - len(output))]
    return output


def compact(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


# -- the compressor ---------------------------------------------------------------------------------------------


def content_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def handle_of(text: str) -> str:
    return "g" + content_key(text)[:10]


@dataclass
class Compressor:
    """Applies the rules to one content at a time, with the scorer, the gate and the store.

    Thread-safe: contents are counted in parallel, but one compression runs at a time (the scorer is one
    model; two at once would only share the same cores). Callers run it off the event loop.
    """

    settings: Settings
    scorer: Any
    metrics: Any = None
    gate: Gate | None = None
    store: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        if self.store is None:
            self.store = MemoryStore(self.settings.cache_entries)
        s = self.settings
        # decisions are shared only between proxies that would make the same ones: every text option counts
        shape = (sorted((f.name, repr(getattr(s, f.name))) for f in fields(TextOptions)), s.min_tokens, "v3")
        self.fingerprint = hashlib.sha256(repr(shape).encode()).hexdigest()[:12]
        self.budget = Budget(keep=s.keep, tokens=s.tokens)
        self.counter = counter(s.tokenizer, self.scorer)  # the tokens the budget is counted in

    # -- measuring -----------------------------------------------------------------------------------------

    def count(self, text: str) -> int:
        """Tokens of `text` by the tokenizer the budget is counted in (the scorer's by default)."""
        return self.counter.count(text) if text else 0

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
        self._compress(text[: len(text) // 4], "What did the team move?", [], "prose")  # warm-up
        t0 = time.perf_counter()
        self._compress(text, "What did the team move?", [], "prose")
        return (time.perf_counter() - t0) * 1e6 / n

    # -- compressing ---------------------------------------------------------------------------------------

    def _fallback_keep(self, n: int) -> float:
        """The keep of the guard's second try: halfway from the budget to keeping everything."""
        return min(1.0, (1 + self.budget.target(n) / max(n, 1)) / 2)

    def _compress(self, text: str, question: str | None, protect: list, kind: str, keep: float | None = None,
                  fallback: float | None = None) -> Any:  # fmt: skip
        import gistify

        s = self.settings
        budget = {"keep": keep} if keep is not None else {"keep": s.keep, "tokens": s.tokens}
        options = s.compress_kwargs(self.scorer)  # the method, its parameters and the options set (TextOptions)
        # in JSON too: a member that holds a number or an identifier is kept (the protect_* settings), and so is
        # one inside a string; the content's own code and JSON spans join the patterns given
        options["protect"] = [*s.protect, *protect]
        options["json_minify"] = kind != "prose"
        # code and JSON spans are protected: when they alone are over the budget, keep them all (the content is
        # then over budget, never changed in meaning) rather than fail the compression
        options["on_protected_overflow"] = "keep"
        options["fallback"] = fallback
        try:
            return gistify.compress(text, question=question, **options, **budget)
        finally:
            self.scorer.forget()  # the scorer keeps every text's statistics; a server sees unbounded texts

    @staticmethod
    def _brief(report: dict) -> dict:
        brief = {
            "score": report.get("score", 0.0),
            "lost": {k: v for k, v in report.get("lost_counts", {}).items() if v},
        }
        items = [f"{x['kind']}:{x['text']}" for x in report.get("items", [])[:5]]
        if items:
            brief["items"] = items
        return brief

    def quick(self, text: str) -> Outcome | None:
        """The outcome when it costs no compression: a short content, or one decided before; else None."""
        n = self.count(text)
        if n <= self.settings.min_tokens:
            return Outcome(text, n, n, "short")
        hit = self.store.get(self._key(text))
        if hit is None:
            return None
        self._count_cache("hit")
        return Outcome.from_store(hit)

    def _key(self, text: str) -> str:
        return f"{self.fingerprint}:{content_key(text)}"

    def content(self, text: str, question: str | None, model: str | None = None) -> Outcome:
        """The outcome for one compressible content (rules 2 to 5), from the store when it was decided before."""
        quick = self.quick(text)
        if quick is not None:
            return quick
        key = self._key(text)
        with self._lock:  # a concurrent request with the same content waits here, then hits the store
            hit = self.store.get(key)
            if hit is None:
                self._count_cache("miss")
                out = self._decide(text, self.count(text), question, model)
                provisional = out.action == "gate" and out.gate["prefill_from"] == "default"
                if provisional:
                    return out
                kept = self.store.put(key, out.to_store())
                if kept.get("text") != out.text:  # another replica decided first: its bytes, for everyone
                    return Outcome.from_store(kept)
                return out
        self._count_cache("hit")
        return Outcome.from_store(hit)

    def _count_cache(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.cache.labels(result).inc()

    def _decide(self, text: str, n: int, question: str | None, model: str | None) -> Outcome:
        kind = "json" if is_json(text) else "prose"
        target = self.budget.target(n)
        decision = self.gate.decide(n, target, model) if self.gate else None
        gate = asdict(decision) if decision else None
        if decision is not None:
            self._count_gate(decision)
            if not decision.compress:
                return Outcome(text, n, n, "gate", gate=gate, kind=kind)
        t0 = time.perf_counter()
        try:
            if kind == "json":
                sent, brief, fallback = self._json(text, question, n)
            else:
                spans = structure_spans(text)
                result = self._compress(text, question, spans, kind, fallback=self._fallback_keep(n))
                brief = self._brief(result.risk)
                fallback = None
                if result.fell_back:  # the library's fallback ran: sent whole if its last step still did not hold
                    still = result.risk.get("score", 0) > self.settings.max_risk or result.risk.get("meaning_changed")
                    fallback = "uncompressed" if still else "higher_keep"
                sent = text if fallback == "uncompressed" else result.text
        except Exception as e:  # a content the compressor cannot take goes upstream as it came
            log.warning("compression failed, content sent unchanged: %s: %s", type(e).__name__, e)
            if self.metrics is not None:
                self.metrics.errors.labels("compress_failed").inc()
            return Outcome(text, n, n, "failed", seconds=time.perf_counter() - t0, gate=gate, kind=kind)
        seconds = time.perf_counter() - t0
        if self.gate is not None:
            self.gate.cost.observe(n, seconds)
        if self.metrics is not None:
            self.metrics.compress_seconds.observe(seconds)
            if fallback:
                self.metrics.fallbacks.labels(fallback).inc()
        out_n = n if sent == text else self.count(sent)
        if out_n >= n:  # nothing gained (e.g. a JSON whose members are all protected): send it as it came
            sent, out_n = text, n
        action = "fallback" if fallback else "compressed"
        handle = handle_of(text) if out_n < n else None
        return Outcome(sent, n, out_n, action, seconds=seconds, fallback=fallback, risk=brief, gate=gate,
                       kind=kind, handle=handle)  # fmt: skip

    def _json(self, text: str, question: str | None, n: int) -> tuple[str, dict, str | None]:
        """A whole-JSON content, compressed structurally: (text to send, risk in brief, fallback or None)."""
        source = json.loads(text)
        fallback = None
        for keep in (None, self._fallback_keep(n)):
            result = self._compress(text, question, [], "json", keep=keep)
            output = json.loads(result.text)  # the structure-aware path keeps it parseable; a failure is loud
            before, after = json_changed_strings(source, output)
            report = risk_report(before, after) if before else {"score": 0.0}
            brief = self._brief(report)
            if report["score"] <= self.settings.max_risk:
                return compact(count_trimmed(source, output)), brief, fallback
            fallback = "higher_keep"
        return text, brief, "uncompressed"

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
