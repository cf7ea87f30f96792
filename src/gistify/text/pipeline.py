"""The text family's compress pipeline: shrink a text for a question under a token budget, with any text method.

structure (units: words, or Markdown / JSON / chat elements kept whole) -> count target-tokenizer tokens
(each unit's cost) -> protected spans, checked against the budget before any scoring -> the method's score per
word, per unit -> select the best units within the budget -> reassemble in order -> fit to the real token count
-> never empty (cut inside the best unit), and a word over what the budget leaves cut inside rather than dropped
-> risk report with the meaning check -> the fallback ladder when the meaning changed (on by default: same budget
with more protected, then a keep halfway to 1, then the text unchanged).
`TextMethod.compress` runs it; `gistify.compress` reaches it through the method object.

About 600 lines: the stages above share one selection state (units, costs, protection, the kept mask) and are
easier to follow in order in one file than split across modules that pass it around; the options' checks live in
options.py, so that a command can run them before any model loads.
"""

from __future__ import annotations

import dataclasses
import re
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from gistify.budget import Budget
from gistify.method import check_text
from gistify.progress import progress_bar, stage
from gistify.result import Compressed
from gistify.text import tokens as tok
from gistify.text.fidelity import risk, summary
from gistify.text.options import TextOptions, pipeline_options
from gistify.text.protect import NEGATION_PHRASE, NUMBER, missing, protected_ranges, protected_words
from gistify.text.scorer import Scorer
from gistify.text.structure import Layout, analyse
from gistify.text.words import Document, assemble, word_costs

if TYPE_CHECKING:
    from gistify.text.base import TextMethod

_MAX_RECOUNTS = 64
UNCHANGED = "returned the text unchanged"
# the fallback's negated phrase runs on to a number one to three words after it: "never start the ridge after
# 13:00", "is no longer valid after 24 hours", so that protecting the one does not cut the other from its clause
NEGATION_TO_NUMBER = NEGATION_PHRASE + r"(?:(?:[ \t]+[\w'’-]*\w){0,2}[ \t]+" + NUMBER.removeprefix("[-+−]?") + ")?"
CLEARED = "dropped the rest of the clauses that lost a number or negation, at the same budget"


class ProtectedOverflow(ValueError):
    """The protected content alone takes more tokens than the budget (`on_protected_overflow="error"`)."""

    def __init__(self, taken: int, target: int):
        self.taken, self.target = taken, target
        super().__init__(
            f"the protected content alone takes {taken} tokens, over the budget of {target}: raise the budget "
            f"(tokens={taken} or more), protect less, or pass on_protected_overflow='keep' (keep all of it, over "
            "the budget) or 'trim' (protect only what fits: your own patterns and spans first, then the best-scored)"
        )


@lru_cache(maxsize=4)
def shared_scorer(model: str | None) -> Scorer:
    """The scorer `compress` loads when none is given: one per model name, kept for the process."""
    return Scorer.load(model)


def compress_text(
    m: TextMethod,
    text: str,
    question: str | None = None,
    *,
    keep: float | None = None,
    tokens: int | None = None,
    scorer: Scorer | None = None,
    progress: bool = False,
    **options: Any,
) -> Compressed:
    """Compress `text` for `question` with the text method `m` to `keep` (fraction of tokens) or `tokens` (count).

    Args:
        scorer: the scoring LM (default: the embedded SmolLM2, or the option `model`, a name, path or hub id).
        progress: draw a progress bar on stderr for every stage of a long input.
        options: the pipeline's options, fields of `gistify.text.options.TextOptions` (which says what each does):
            `model`, `tokenizer`, `protect`, `protect_numbers`, `protect_negations`, `protect_identifiers`,
            `structure`, `json_minify`, `on_protected_overflow`, `fallback`, `max_risk`.
    """
    text = check_text(text)
    budget = Budget(keep=keep, tokens=tokens)
    unknown = sorted(set(options) - set(pipeline_options()))
    if unknown:
        raise ValueError(f"compress_text has no option {', '.join(unknown)}; its options: "
                         f"{', '.join(pipeline_options())}")  # fmt: skip
    o = TextOptions(**options)
    if scorer is not None and o.model is not None:
        raise ValueError("give either `scorer` or `model`, not both")
    fallback = "off" if o.fallback is None else o.fallback
    max_risk = 0.2 if o.max_risk is None and fallback != "auto" else o.max_risk  # explicit fallbacks' since issue 14
    if o.structure == "json" or (o.structure == "auto" and o.json_minify):
        analyse(text, o.structure, o.json_minify)  # a text that is not the JSON it claims fails before the model loads
    if scorer is None and (m.needs_scorer or o.tokenizer == "scorer"):
        with stage("loading the scorer", progress):
            scorer = shared_scorer(o.model)
    counter = tok.counter(o.tokenizer, scorer)
    # negations protected by default, where words are picked one by one: truncation keeps one contiguous piece
    # (its promise), which cannot invert a clause except at its edge, and the fallback checks that edge
    soft = [NEGATION_PHRASE] if o.protect_negations is None and m.fill_gaps else []
    run = dict(
        question=question, scorer=scorer, counter=counter, protect=o.protect, protect_numbers=o.protect_numbers,
        protect_negations=bool(o.protect_negations), protect_identifiers=o.protect_identifiers, soft=soft,
        progress=progress, structure=o.structure, json_minify=o.json_minify, overflow=o.on_protected_overflow,
    )  # fmt: skip
    t0 = time.perf_counter()
    result = _compress(m, text, budget, **run)
    result.risk = full_risk(text, result, question)
    why = _why(result.risk, max_risk)
    if fallback == "off" or why is None:
        result.seconds = time.perf_counter() - t0
        return result
    tried = []  # each step tried, and why the one before the last did not hold
    for step, back in _ladder(m, text, budget, result, fallback, run):
        back.risk = full_risk(text, back, question)
        still = _why(back.risk, max_risk)
        tried.append(f"{step}{_over(back)}")
        if still is None or step == UNCHANGED:
            break
        tried[-1] += f", but {still}"
    back.notes = [*back.notes, f"fell back: {why}; " + "; then ".join(tried)]
    back.fell_back, back.fallback_step = True, step
    back.seconds = time.perf_counter() - t0
    return back


def full_risk(source: str, result: Compressed, question: str | None) -> dict:
    """The risk report (gistify.text.fidelity) with the meaning check that the proxy also runs
    (gistify.text.meaning: what was dropped from a clause that was kept, and the question's items lost), made
    exact by the result's kept spans."""
    from gistify.text.meaning import risk as meaning

    report = risk(source, result.text)
    if result.text != source:
        m = meaning(result.source, result.text, question, kept_spans=result.kept_spans)
        report.update(meaning_changed=m["meaning_changed"], changed=m["changed"], question_lost=m["question_lost"])
    else:
        report.update(meaning_changed=False, changed=[], question_lost=[])
    return report


def _why(report: dict, max_risk: float | None) -> str | None:
    """Why a result must fall back, in a few words; None when it need not."""
    reasons = [
        f"{c['kind']} {c['text']!r} dropped from a kept clause ({c['context']})"
        for c in report["changed"]
        if c["kind"] in ("negation", "number")
    ][:3]
    if report["question_lost"]:
        reasons.append(f"the question's {', '.join(map(repr, report['question_lost']))} lost")
    if max_risk is not None and report["score"] > max_risk:
        reasons.append(f"the risk {report['score']:.2f} was over max_risk {max_risk:g} ({summary(report)})")
    return "; ".join(reasons) or None


def _over(r: Compressed) -> str:
    """How far a fallback's result is from the budget, for its note."""
    if r.tokens_out <= r.target_tokens:
        return f" ({r.tokens_out} tokens, within the budget of {r.target_tokens})"
    return f" ({r.tokens_out} tokens, {r.tokens_out - r.target_tokens} over the budget of {r.target_tokens})"


def _clear_around(r: Compressed, text: str, run: dict) -> Compressed | None:
    """`r` without the kept words next to each negation or number it dropped from a kept clause (the rest of the
    clause goes too: the text says less, nothing false), at its budget; protected words stay. Prose only, and
    not where a word was cut or a question item is missing. None when that does not remove every change."""
    if r.cut or r.risk["question_lost"] or r.source != text:
        return None
    layout, _ = analyse(r.source, run["structure"], False)
    if not layout.plain:
        return None
    words = layout.words
    protected = protected_words(r.protected, words)
    for _ in range(3):  # a dropped neighbour may itself be a number whose own neighbours were kept
        around = [a for c in r.risk["changed"] if c["kind"] in ("negation", "number") for a in c.get("kept_around", ())]
        if not around:
            return r
        ends = np.array([e for _, e in r.kept_spans])
        k = np.searchsorted(ends, words[:, 1], side="left")
        starts = np.array([s for s, _ in r.kept_spans] + [len(r.source) + 1])
        keep = (k < len(ends)) & (starts[np.minimum(k, len(ends))] <= words[:, 0])
        before = int(keep.sum())
        for s, e in around:
            first = np.searchsorted(words[:, 1], s, side="right")
            last = np.searchsorted(words[:, 0], e, side="left")
            keep[first:last] &= protected[first:last]
        if int(keep.sum()) == before or not keep.any():
            return None
        out, spans = assemble(r.source, words, keep)
        n = run["counter"].count(out)
        if n > r.target_tokens:
            return None
        note = f"dropped {before - int(keep.sum())} words kept around dropped numbers or negations (their clauses)"
        r = dataclasses.replace(r, text=out, kept_spans=spans, tokens_out=n, notes=[*r.notes, note])
        r.risk = full_risk(text, r, run["question"])
    return r if not any(c["kind"] in ("negation", "number") for c in r.risk["changed"]) else None


def _question_items(text: str, question: str | None, lost: list[str]) -> list[str]:
    """The numbers, names and identifiers of `question` that `text` holds (the risk report's question items)."""
    from gistify.text.meaning import risk as meaning

    return sorted(set(lost) | set(meaning(text, "", question)["question_lost"])) if question else list(lost)


def _ladder(m, text, budget, first, fallback, run):
    """The fallbacks to try in order, each as (what it did, its result), computed only when reached."""
    target, n = first.target_tokens, first.tokens_in
    if fallback == "auto":
        lost = first.risk["question_lost"]
        # the question's items first (all of them: protecting numbers must not crowd out those the first cut
        # kept), then negations, then numbers: when they do not all fit, the first are kept (`_trim`)
        asked = _question_items(text, run["question"], lost)
        soft = [*(rf"(?<!\w){re.escape(t)}(?!\w)" for t in asked), NEGATION_TO_NUMBER, NUMBER, *run["soft"]]
        guarded = {**run, "soft": soft, "asked": set(soft[: len(asked)])}
        back = _compress(m, text, budget, **guarded)
        yield "compressed again at the same budget with numbers, negations and the question's items protected", back
        cleared = _clear_around(back, text, run)  # `back.risk` is the caller's report on the step just taken
        if cleared is not None:
            yield CLEARED, cleared
        half = min(1.0, (target / n + 1) / 2) if n else 1.0
        if half < 1:
            back = _compress(m, text, Budget(keep=half), **guarded)
            back.target_tokens, back.budget = target, str(budget)  # the user's budget, which it may exceed
            yield f"compressed again at keep={half:.2f}", back
    elif fallback != "unchanged" and fallback < 1:  # the keep the user chose, and nothing beyond it
        back = _compress(m, text, Budget(keep=float(fallback)), **run)
        back.target_tokens, back.budget = target, str(budget)
        yield f"compressed again at keep={fallback:g}", back
        return
    yield UNCHANGED, _unchanged(m, text, budget, run["counter"], n, target)


def _unchanged(m, text, budget, counter, tokens_in, target, notes=()) -> Compressed:
    return Compressed(
        text=text, source=text, kept_spans=[(0, len(text))], tokens_in=tokens_in, tokens_out=tokens_in,
        target_tokens=target, budget=str(budget), method=m.name, params=m.params(), tokenizer=counter.name,
        seconds=0.0, notes=list(notes),
    )  # fmt: skip


def _compress(
    m, text, budget, *, question, scorer, counter, protect, protect_numbers, protect_negations,
    protect_identifiers, soft, progress, structure, json_minify, overflow, asked=(),
) -> Compressed:  # fmt: skip
    t0 = time.perf_counter()
    # a long input spends seconds here before the scorer's first window: say so, off a terminal too
    with progress_bar(4, "preparing", progress) as advance:
        tokens_in = counter.count(text)
        advance()
        target = budget.target(tokens_in)
        if target >= tokens_in:
            notes = (
                []
                if budget.keep == 1
                else [f"the budget ({budget}) is not below the text's {tokens_in} tokens: returned unchanged"]
            )
            return _unchanged(m, text, budget, counter, tokens_in, target, notes)
        layout, notes = analyse(text, structure, json_minify)
        advance()
        src = layout.text
        if layout.minified and any(not isinstance(p, str) for p in protect):
            raise ValueError("with json_minify, protect takes regular expressions, not (start, end) spans")
        own = protected_ranges(src, protect)
        # hard: what the user asked for (their spans and patterns, the options they turned on); soft: what the
        # defaults and the fallback add, protected only as far as the budget allows, best-scored first
        hard = sorted(
            set(own) | set(protected_ranges(src, (), protect_numbers, protect_negations, protect_identifiers))
        )
        tier = {r: 0 for r in hard}  # when not all fit: what the user asked for, then each soft pattern in turn
        for i, pattern in enumerate(soft, 1):
            found = protected_ranges(src, [pattern])
            for j, r in enumerate(found):
                # a question's item needs one occurrence kept, not every one ("Alabama" 40 times in its article)
                tier.setdefault(r, i if j == 0 or pattern not in asked else len(soft) + 1)
        soft = sorted(r for r, t in tier.items() if t > 0)
        ranges = sorted(tier)
        advance()
        result = dict(
            source=src,
            tokens_in=tokens_in,
            target_tokens=target,
            budget=str(budget),
            method=m.name,
            params=m.params(),
            tokenizer=counter.name,
            protected=ranges,
        )
        if layout.minified and counter.count(src) <= target:
            notes.append("the minified JSON fits the budget: nothing else was dropped")
            return Compressed(text=src, kept_spans=[(0, len(src))], tokens_out=counter.count(src),
                              seconds=time.perf_counter() - t0, notes=notes, **result)  # fmt: skip

        words = layout.words
        starts = counter.starts(src)
        costs = word_costs(starts, words)
        advance()
    ucost = costs if layout.plain else np.bincount(layout.charge, weights=costs, minlength=layout.n_units)
    ucost = ucost.astype(np.int64)
    uprot = _units_of(layout, ranges)
    taken = int(ucost[uprot].sum())
    taken_hard = int(ucost[_units_of(layout, hard)].sum()) if soft else taken
    if taken_hard > target:  # before any scoring: the user decides
        if overflow == "error":
            raise ProtectedOverflow(taken_hard, target)
        if overflow == "keep":
            ranges = hard
            uprot = _units_of(layout, ranges)
            notes.append(
                f"protected content alone takes {taken_hard} tokens, over the budget of {target}: all of it was kept"
            )
            result["protected"] = ranges

    doc = Document(src, words, question, scorer, progress, share=target / tokens_in)
    scores = np.asarray(m.score(doc), dtype=np.float64)
    notes.extend(doc.notes)
    if scores.shape != (len(words),) or np.isnan(scores).any():
        raise RuntimeError(f"{m.name}.score returned shape {scores.shape} or NaN; expected ({len(words)},) numbers")
    uscore = scores if layout.plain else _unit_scores(layout, scores)
    with progress_bar(3, "selecting", progress) as advance:
        if taken_hard > target and overflow == "trim":
            ranges = _trim(layout, {r: int(r not in own) for r in ranges}, ranges, uscore, ucost, target)
            uprot = _units_of(layout, ranges)
            notes.append(
                f"protected content takes {taken} tokens, over the budget of {target}: only {len(ranges)} "
                f"protected spans were kept ({int(ucost[uprot].sum())} tokens)"
            )
            result["protected"] = ranges
        elif taken_hard <= target < taken:  # the defaults' protection, to what fits
            n_soft = len(ranges) - len(hard)
            # a little room left: the kept words, joined, may take a few tokens more than their costs summed
            ranges = _trim(layout, tier, ranges, uscore, ucost, target - max(1, target // 20))
            uprot = _units_of(layout, ranges)
            notes.append(
                f"the negations (and other items protected by default) take {taken} tokens, over the budget of "
                f"{target}: {len(ranges) - len(hard)} of {n_soft} were protected, the best-scored"
            )
            result["protected"] = ranges
        ukeep = select_units(layout, uscore, ucost, target, uprot, m.fill_gaps)
        advance()
        out, spans, n_out, ukeep = _fit(layout, ukeep, uscore, ucost, uprot, target, counter, m.fill_gaps)
        advance()
        if not spans:
            out, spans, n_out, note = _cut(layout, uscore, costs, starts, target, counter)
            notes.append(note)
        elif (why := layout.check(out)) is not None:  # cannot happen by construction: fail loudly
            raise RuntimeError(f"{m.name} broke the {layout.kind} structure: {why}")
        elif (part := _cut_into(layout, ukeep, uscore, ucost, costs, starts, target, counter, n_out)) is not None:
            out, spans, n_out, note = part
            notes.append(note)
        advance()

    lost = missing(ranges, spans)
    if lost:  # cannot happen by construction; a loud failure beats a silently changed meaning
        raise RuntimeError(f"protected text was not kept verbatim: {[src[s:e] for s, e in lost]}")
    return Compressed(
        text=out, kept_spans=spans, tokens_out=n_out, seconds=time.perf_counter() - t0, notes=notes,
        cut=_cut_heads(words, spans), **result,
    )  # fmt: skip


def _cut_heads(words: np.ndarray, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The kept heads of words cut inside: (the word's start, where the kept part ends), for spans ending
    inside a word."""
    out = []
    for _, e in spans:
        i = int(np.searchsorted(words[:, 1], e, side="left"))  # the first word ending at or after e
        if i < len(words) and words[i, 0] < e < words[i, 1]:
            out.append((int(words[i, 0]), e))
    return out


def _units_of(layout: Layout, ranges: list[tuple[int, int]]) -> np.ndarray:
    """(n_units,) bool: the units that hold a protected word, with their ancestors."""
    pw = protected_words(ranges, layout.words)
    if layout.plain:
        return pw
    uprot = np.zeros(layout.n_units, dtype=bool)
    u = layout.unit[pw]
    uprot[u[u >= 0]] = True
    return layout.close(uprot)


def _unit_scores(layout: Layout, scores: np.ndarray) -> np.ndarray:
    """(n_units,) the mean of the finite scores of a unit's words (-inf when none is finite)."""
    ok = (layout.unit >= 0) & np.isfinite(scores)
    n = np.bincount(layout.unit[ok], minlength=layout.n_units)
    total = np.bincount(layout.unit[ok], weights=scores[ok], minlength=layout.n_units)
    return np.where(n > 0, total / np.maximum(n, 1), -np.inf)


def _trim(layout, tier, ranges, uscore, ucost, target) -> list[tuple[int, int]]:
    """The protected ranges that fit the budget, by `tier` (range -> 0, 1, ...: the user's own first), each tier
    best-scored first (a range's score: the mean of its units'), a range whole or not at all."""
    kept, keep, used = [], np.zeros(layout.n_units, dtype=bool), 0

    def rank(r):
        u = np.flatnonzero(_units_of(layout, [r]))
        return (tier.get(r, 1), -float(np.mean(uscore[u])) if len(u) else 0.0, r)

    for r in sorted(ranges, key=rank):
        u = _units_of(layout, [r]) & ~keep
        extra = int(ucost[u].sum())
        if used + extra <= target:
            keep |= u
            used += extra
            kept.append(r)
    return sorted(kept)


def select_units(
    layout: Layout, scores: np.ndarray, costs: np.ndarray, target: int, protected: np.ndarray, fill_gaps: bool = True
) -> np.ndarray:
    """(n_units,) bool: protected units, then the best-scoring units while their cost (with the cost of the
    parents they bring) fits `target`.

    With `fill_gaps`, a unit that does not fit is skipped and smaller ones after it are still tried (a
    greedy knapsack, so the budget is met closely); without it, selection stops at the first unit that does
    not fit (truncation must stay contiguous). Units scored -inf are never chosen; skeletons only as parents.
    In plain prose (units are words) this is words.select.
    """
    keep = protected.copy()
    used = int(costs[keep].sum())
    plain = layout.plain
    for i in np.argsort(-scores, kind="stable"):
        if keep[i]:
            continue
        if not plain and not layout.selectable[i]:
            continue
        if not np.isfinite(scores[i]) and scores[i] < 0:
            break
        up = [] if plain else [a for a in layout.ancestors(int(i)) if not keep[a]]
        need = int(costs[i]) + (int(costs[up].sum()) if up else 0)
        if used + need <= target:
            keep[i] = True
            keep[up] = True
            used += need
        elif not fill_gaps:
            break
    return keep


def _fit(layout, keep, scores, costs, protected, target, counter, fill_gaps):
    """Adjust a selection of units to the real token count of the reassembled text.

    Unit costs come from tokenizing the whole text; joined differently, the words can tokenize a little
    differently. Drop the lowest-scoring kept units that nothing kept depends on while over the budget, then
    (for gap-filling methods) add the best units that still fit while more than one token under it.
    """
    text, words = layout.text, layout.words
    keep = keep.copy()
    out, spans = assemble(text, words, layout.word_mask(keep))
    n = counter.count(out)
    for _ in range(_MAX_RECOUNTS):
        if n <= target:
            break
        droppable = np.flatnonzero(layout.leaves(keep) & ~protected)
        if len(droppable) == 0:
            break
        order = droppable[np.argsort(scores[droppable], kind="stable")]
        cut = np.searchsorted(np.cumsum(costs[order]), n - target) + 1  # enough estimated cost to go under
        keep[order[:cut]] = False
        keep = layout.prune(keep, protected)
        out, spans = assemble(text, words, layout.word_mask(keep))
        n = counter.count(out)
    if fill_gaps:
        tries = 0
        plain = layout.plain
        for i in np.argsort(-scores, kind="stable"):
            if n >= target - 1 or tries >= _MAX_RECOUNTS:
                break
            if keep[i] or not np.isfinite(scores[i]) or not plain and not layout.selectable[i]:
                continue
            up = [] if plain else [a for a in layout.ancestors(int(i)) if not keep[a]]
            if costs[i] + (costs[up].sum() if up else 0) > target - n:
                continue
            keep[i] = True
            keep[up] = True
            tries += 1
            cand, cand_spans = assemble(text, words, layout.word_mask(keep))
            c = counter.count(cand)
            if c <= target:
                out, spans, n = cand, cand_spans, c
            else:
                keep[i] = False
                keep[up] = False
    return out, spans, n, keep


def _cut_into(layout, keep, scores, ucost, costs, starts, target, counter, n):
    """Room left that no whole unit fits, because the next best unit alone is over it (a long word: a base64
    blob, a hash, a minified line, a URL): fill the room with that unit's head, cut inside it, rather than leave
    the budget unused. Only when the room is worth it (a quarter of the budget, 8 tokens at least) and the cut
    keeps the structure whole. Returns (text, spans, tokens, note) or None."""
    room = target - n
    if room < max(8, target // 4):
        return None
    if layout.kind not in ("prose", "markdown"):  # a cut JSON string or chat message would not parse
        return None
    cand = ~keep & np.isfinite(scores) & (ucost > room)
    if not layout.plain:
        cand &= layout.selectable
        cand[list(layout.fences)] = False  # a fenced block keeps both fences or goes (see _cut)
        cand &= np.array([all(keep[a] for a in layout.ancestors(int(u))) for u in range(layout.n_units)])
    if not cand.any():
        return None
    u = int(np.flatnonzero(cand)[np.argmax(scores[cand])])
    text, words = layout.text, layout.words
    own = np.flatnonzero(layout.unit == u) if not layout.plain else np.array([u])
    base = layout.word_mask(keep)
    k = int(np.searchsorted(np.cumsum(costs[own]), room - 1, side="right"))  # whole words of it that fit
    cut, mask = words.copy(), base.copy()
    mask[own[:k]] = True
    if k < len(own):
        w = int(own[k])
        inner = starts[(starts > words[w, 0]) & (starts < words[w, 1])]
        r = max(1, room - int(costs[own[:k]].sum()))
        for _ in range(_MAX_RECOUNTS):
            if r < 1 or r > len(inner):
                r = min(r, len(inner))
                if r < 1:
                    break
            mask[w], cut[w, 1] = True, int(inner[r - 1])
            out, spans = assemble(text, cut, mask, cut=w)
            c = counter.count(out)
            if c <= target and layout.check(out) is None:
                kept = int(inner[r - 1] - words[w, 0])
                note = (
                    f"a word of {int(words[w, 1] - words[w, 0])} characters ({int(costs[w])} tokens) is over what "
                    f"the budget of {target} left ({room} tokens): kept its first {kept} characters, cut inside it "
                    f"(the result's `cut`)"
                )
                return out, spans, c, note
            r -= max(1, c - target)
        return None
    out, spans = assemble(text, cut, mask)
    c = counter.count(out)
    if c <= target and layout.check(out) is None:
        return out, spans, c, f"a unit over the room the budget left was cut: kept its first {k} words"
    return None


def _cut(layout, scores, costs, starts, target, counter):
    """No whole unit fits: keep the head of the best-scoring unit, cut inside it to the budget (inside a
    word if need be), with the parents it needs and, for a fenced code block, both fence lines when they fit.
    Never empty for a budget of one token or more. Returns (text, spans, tokens, note)."""
    text, words = layout.text, layout.words
    pick = np.flatnonzero(layout.selectable)
    pick = pick[np.argsort(-scores[pick], kind="stable")] if len(pick) else np.zeros(1, dtype=np.int64)
    best, frame = int(pick[0]), np.zeros(len(words), dtype=bool)
    if not layout.plain:  # the best unit whose parents leave room for a token of it
        for u in pick[: 4 * _MAX_RECOUNTS]:
            up = np.zeros(layout.n_units, dtype=bool)
            up[layout.ancestors(int(u))] = True
            if costs[layout.word_mask(up)].sum() < target:
                best, frame = int(u), layout.word_mask(up)
                break
    whole = np.flatnonzero(layout.unit == best)
    own = whole
    if not layout.plain:
        opening, closing = layout.fences.get(best, (whole[:0], whole[:0]))
        if len(closing):  # keep both fence lines, cut the code between them
            frame[opening] = frame[closing] = True
            own = np.setdiff1d(whole, np.concatenate([opening, closing]))
    if costs[frame].sum() >= target:  # the frame alone does not fit: the unit's head alone
        own, frame = whole, np.zeros(len(words), dtype=bool)
    room = target - int(costs[frame].sum())
    k = int(np.searchsorted(np.cumsum(costs[own]), room, side="right"))  # whole words that fit
    head, nxt = list(own[:k]), (int(own[k]) if k < len(own) else None)
    ends = []  # where the next word may end: the starts of its inner tokens, r tokens kept for ends[r - 1]
    if nxt is not None:
        inner = starts[(starts > words[nxt, 0]) & (starts < words[nxt, 1])]
        ends = [int(x) for x in inner[: max(1, room - int(costs[head].sum()))]]
    cut = words.copy()
    out, spans, n = "", [], 0
    for _ in range(2 * _MAX_RECOUNTS):
        mask = frame.copy()
        mask[head] = True
        if ends:
            mask[nxt], cut[nxt, 1] = True, ends[-1]
        out, spans = assemble(text, cut, mask, cut=nxt if ends else None)
        n = counter.count(out)
        if spans and n <= target and layout.check(out) is None:
            break
        if ends:
            ends.pop()
        elif head:
            head.pop()
        elif frame.any():
            frame[:] = False
        else:
            break
    if not spans or n > target:  # the first token of the unit's first word, whatever it costs
        w = int(whole[0]) if len(whole) else 0
        inner = starts[(starts > words[w, 0]) & (starts < words[w, 1])]
        s, e = int(words[w, 0]), int(inner[0]) if len(inner) else int(words[w, 1])
        out, spans = text[s:e], [(s, e)]
        n = counter.count(out)
    what = "a word" if layout.plain else f"a {layout.kind} unit"
    note = f"no whole unit fits the budget of {target} tokens: kept the first {n} tokens of {what}, cut inside it"
    if (why := layout.check(out)) is not None:
        note += f"; {why}"
    return out, spans, n, note
