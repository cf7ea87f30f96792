"""The contract every text method keeps, run for each registered method on a tiny random-weight Llama."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gistify
from conftest import assert_spans_rebuild, prose
from gistify.text.words import segment
from methods_params import TEXT_METHODS

CASES = [(name, params) for name, sets in TEXT_METHODS.items() for params in sets]
QUESTION = "How many termites can one aardwolf eat in a night?"


def run(scorer, text, method, params, **kw):
    return gistify.compress(text, QUESTION, method=method, scorer=scorer, **params, **kw)


def test_every_text_method_is_covered():
    assert set(gistify.methods("text")) == set(TEXT_METHODS)


@pytest.mark.parametrize("method,params", CASES)
@pytest.mark.parametrize("keep", [0.5, 0.2])
def test_budget_spans_and_order(tiny_scorer, method, params, keep):
    text = prose()[:3000]
    r = run(tiny_scorer, text, method, params, keep=keep)
    assert r.target_tokens == int(np.ceil(keep * r.tokens_in - 1e-9))
    assert r.tokens_out == len(tiny_scorer.tokenizer(r.text, add_special_tokens=False).input_ids)
    assert r.tokens_out <= r.target_tokens + 1
    if method == "truncate":  # contiguous: may stop short by less than the next word's cost
        assert r.target_tokens - r.tokens_out < 8
    else:
        assert abs(r.tokens_out - r.target_tokens) <= 1
    assert r.keep_ratio == pytest.approx(r.tokens_out / r.tokens_in)
    assert_spans_rebuild(r.source, r.kept_spans, r.text)


@pytest.mark.parametrize("method,params", CASES)
def test_token_count_budget(tiny_scorer, method, params):
    r = run(tiny_scorer, prose()[:2000], method, params, tokens=120)
    assert r.target_tokens == 120
    assert r.tokens_out <= 121 and (method == "truncate" or r.tokens_out >= 119)


@pytest.mark.parametrize("method,params", CASES)
def test_keep_one_and_large_token_budget_return_input_unchanged(tiny_scorer, method, params):
    text = prose()[:1500] + "\n\n  trailing  \n"
    r = run(tiny_scorer, text, method, params, keep=1.0)
    assert r.text == text and r.kept_spans == [(0, len(text))] and r.notes == []
    r = run(tiny_scorer, text, method, params, tokens=10**6)
    assert r.text == text and "returned unchanged" in r.notes[0]


@pytest.mark.parametrize("method,params", CASES)
def test_protected_content_survives_verbatim(tiny_scorer, method, params):
    text = prose()[:2500]
    keep_me = "using its long, sticky tongue"
    start = text.index(keep_me)
    r = run(
        tiny_scorer,
        text,
        method,
        params,
        keep=0.2,
        protect=[(start, start + len(keep_me)), r"Proteles \w+"],
        protect_numbers=True,
        protect_negations=True,
    )
    assert keep_me in r.text and "Proteles cristata" in r.text
    for number in re.findall(r"\d[\d,]*\d|\d", text):
        assert number in r.text
    assert " not " in r.text
    assert r.protected and all(any(s >= a and e <= b for a, b in r.kept_spans) for s, e in r.protected)


@pytest.mark.parametrize("method,params", CASES)
def test_deterministic(tiny_scorer, method, params):
    text = prose()[:1500]
    a = run(tiny_scorer, text, method, params, keep=0.3)
    b = run(tiny_scorer, text, method, params, keep=0.3)
    assert a.text == b.text and a.kept_spans == b.kept_spans


@pytest.mark.parametrize("method,params", CASES)
def test_multibyte_and_cjk_never_split(tiny_scorer, method, params):
    text = "Café naïve 東京は日本の首都です。 Emoji 👩‍👩‍👧 stays whole; Ω≈ç√ and the end.\n" * 8
    r = run(tiny_scorer, text, method, params, keep=0.4)
    words = {text[s:e] for s, e in segment(text)}
    kept = {r.text[s:e] for s, e in segment(r.text)}
    assert kept <= words  # every output word is a whole source word (CJK characters are words)
    assert_spans_rebuild(r.source, r.kept_spans, r.text)


def test_truncate_sides_keep_the_right_ends(tiny_scorer):
    text = prose()[:2000]
    head = run(tiny_scorer, text, "truncate", {"side": "head"}, keep=0.3)
    tail = run(tiny_scorer, text, "truncate", {"side": "tail"}, keep=0.3)
    middle = run(tiny_scorer, text, "truncate", {"side": "middle"}, keep=0.3)
    assert len(head.kept_spans) == 1 and head.kept_spans[0][0] == 0
    assert len(tail.kept_spans) == 1 and tail.kept_spans[0][1] == len(text.rstrip())
    assert (
        len(middle.kept_spans) == 2 and middle.kept_spans[0][0] == 0 and middle.kept_spans[1][1] == len(text.rstrip())
    )


def test_random_seed_changes_selection(tiny_scorer):
    text = prose()[:2000]
    a = run(tiny_scorer, text, "random", {"seed": 1}, keep=0.3)
    b = run(tiny_scorer, text, "random", {"seed": 2}, keep=0.3)
    assert a.kept_spans != b.kept_spans


def test_openai_tokenizer_budget(tiny_scorer):
    r = run(tiny_scorer, prose()[:3000], "random", {}, keep=0.25, tokenizer="cl100k_base")
    from gistify.text.tokens import openai

    assert r.tokenizer == "cl100k_base" and r.tokens_out == openai("cl100k_base").count(r.text)
    assert abs(r.tokens_out - r.target_tokens) <= 1


def test_threshold_mode_is_dynamic_and_capped(tiny_scorer):
    text = prose()[:2500]
    r = run(tiny_scorer, text, "reinforce", {"threshold": 0.9}, keep=0.5)
    assert r.tokens_out < r.target_tokens  # the threshold chose fewer tokens than the cap
    capped = run(tiny_scorer, text, "reinforce", {"threshold": 0.01}, keep=0.2)
    assert abs(capped.tokens_out - capped.target_tokens) <= 1


def test_bad_input_errors(tiny_scorer):
    with pytest.raises(ValueError, match="empty"):
        gistify.compress("  \n\t ", keep=0.5, method="random", scorer=tiny_scorer)
    with pytest.raises(TypeError, match="str"):
        gistify.compress(b"bytes", keep=0.5, method="random", scorer=tiny_scorer)
    with pytest.raises(ValueError, match=r"keep.*\(0, 1\]"):
        gistify.compress("some text", keep=1.5, method="random", scorer=tiny_scorer)
    with pytest.raises(ValueError, match="exactly one"):
        gistify.compress("some text", keep=0.5, tokens=3, method="random", scorer=tiny_scorer)
    with pytest.raises(ValueError, match="methods that compress text: random, reinforce"):
        gistify.compress("some text", keep=0.5, method="nope", scorer=tiny_scorer)
    with pytest.raises(ValueError, match="no parameter"):
        gistify.compress("some text", keep=0.5, method="random", scorer=tiny_scorer, colour=3)
    with pytest.raises(ValueError, match="layer 9 does not exist"):
        gistify.compress("some text here", keep=0.5, method="reinforce", layer=9, scorer=tiny_scorer)
    with pytest.raises(ValueError, match="truncate.side"):
        gistify.compress("some text", keep=0.5, method="truncate", side="left", scorer=tiny_scorer)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        gistify.compress("some text", keep=0.5, method="random", scorer=tiny_scorer, protect=["(unclosed"])
    with pytest.raises(ValueError, match="unknown tokenizer"):
        gistify.compress("some text", keep=0.5, method="random", scorer=tiny_scorer, tokenizer="p50k")


def test_protected_over_budget_is_refused_kept_or_trimmed(tiny_scorer):
    text = "1 2 3 4 5 6 7 8 9 10 11 12 and some words here"
    kw = dict(tokens=3, method="random", scorer=tiny_scorer, protect_numbers=True, fallback="off")
    with pytest.raises(ValueError, match="over the budget of 3.*on_protected_overflow='keep'.*'trim'"):
        gistify.compress(text, **kw)  # the default: say so before compressing, let the user choose
    r = gistify.compress(text, on_protected_overflow="keep", **kw)
    assert all(str(i) in r.text.split() for i in range(1, 13))
    assert "over the budget" in r.notes[0]
    r = gistify.compress(text, on_protected_overflow="trim", **kw)
    assert r.tokens_out <= 3 and r.text.split() and all(w.isdigit() for w in r.text.split())
    assert "over the budget" in r.notes[0] and len(r.protected) == len(r.text.split())


@pytest.mark.parametrize("method,params", CASES)
def test_query_agnostic_without_a_question(tiny_scorer, method, params):
    r = gistify.compress(prose()[:2000], keep=0.3, method=method, scorer=tiny_scorer, **params)
    assert abs(r.tokens_out - r.target_tokens) <= 1 or method == "truncate"
    assert_spans_rebuild(r.source, r.kept_spans, r.text)


def test_reinforce_without_a_question_favours_the_text_end(tiny_scorer):
    """With no question, reinforce's prior decays from the text's end, r_i ∝ exp(-(n-1-i) / recency)
    (docs/methods.md §1.2 step 3; chosen on the dev articles by experiments/reinforce_lm_dev.py); recency=0 is the
    previous uniform prior, and a question ignores recency."""
    import torch

    from gistify.text.reinforce import ContextualReinforcement
    from gistify.text.words import Document

    text = prose()[:1500]

    def features(question, **params):
        return ContextualReinforcement(**params).features(Document(text, segment(text), question, tiny_scorer))

    assert ContextualReinforcement().recency == 128
    r = features(None)[:, 1]  # ẑ(r): the z-scored prior
    n = len(r)
    expected = torch.exp(-torch.arange(n - 1, -1, -1, dtype=torch.float32) / 128)
    assert torch.allclose(r, (expected - expected.mean()) / expected.std(), atol=1e-4)
    assert torch.equal(features(None, recency=0)[:, 1], torch.zeros(n))  # uniform: a constant z-scores to 0
    tail = features(None, recency=0, tail_tokens=16)[:, 1]  # the spec's tail query alone, as before
    assert not torch.equal(tail, torch.zeros(n)) and not torch.allclose(tail, r, atol=1e-2)
    assert torch.equal(features(QUESTION), features(QUESTION, recency=0))  # a question: recency plays no part
    assert torch.equal(features(QUESTION, recency=5.0), features(QUESTION, recency=0))
    with pytest.raises(ValueError, match="recency must be a number"):
        ContextualReinforcement(recency=-1)
    # At a small budget the text's last words survive without a question, and the first do not.
    out = gistify.compress(text, keep=0.2, method="reinforce", scorer=tiny_scorer)
    words = [text[s:e] for s, e in segment(text)]
    assert out.text.split()[-5:] == words[-5:]
    uniform = gistify.compress(text, keep=0.2, method="reinforce", scorer=tiny_scorer, recency=0)
    assert uniform.text.split()[-5:] != words[-5:]


def test_reinforce_tail_share_keeps_the_text_end_verbatim(tiny_scorer):
    """With no question, `tail_share` of the budget goes to the text's last tokens, whole and in order (as
    truncation's tail keeps them); the rest is reinforce's choice. A question ignores it."""
    from gistify.text.reinforce import ContextualReinforcement

    text = prose()[:3000]

    raw = dict(protect_negations=False, fallback="off")  # the method's own choice, nothing added by the defaults

    def run(question=None, **params):
        return gistify.compress(text, question, keep=0.3, method="reinforce", scorer=tiny_scorer, **params, **raw)

    whole = run(tail_share=1.0)
    tail = gistify.compress(text, keep=0.3, method="truncate", side="tail", scorer=tiny_scorer, **raw)
    assert len(whole.kept_spans) == 1 and whole.kept_spans[0][1] == len(text.rstrip())
    assert abs(len(whole.text) - len(tail.text)) <= 20  # the same contiguous end, to a word or two at its start
    half = run(tail_share=0.5)
    last = half.kept_spans[-1]
    assert last[1] == len(text.rstrip()) and 0.35 < (last[1] - last[0]) / len(whole.text) < 0.65
    assert len(half.kept_spans) > 1  # the other half is spread over the text by the method
    assert run(QUESTION, tail_share=0.5).text == run(QUESTION, tail_share=0.0).text
    with pytest.raises(ValueError, match="tail_share must be a number in"):
        ContextualReinforcement(tail_share=1.5)


def test_reinforce_sentence_weight_keeps_whole_sentences(tiny_scorer):
    """With a large `sentence_weight` the budget goes to whole sentences, best first: every kept sentence is
    whole except where the budget ran out; with 0 (the default) words are chosen alone."""
    from gistify.text.reinforce import ContextualReinforcement
    from gistify.text.words import sentence_ids

    text = prose()[:3000]
    words = segment(text)
    sid = sentence_ids(text, words)

    def partial_sentences(r) -> int:
        kept = np.zeros(len(words), dtype=bool)
        for s, e in r.kept_spans:
            kept |= (words[:, 0] >= s) & (words[:, 1] <= e)
        return sum(0 < kept[sid == k].sum() < (sid == k).sum() for k in np.unique(sid))

    grouped = gistify.compress(text, QUESTION, keep=0.3, method="reinforce", scorer=tiny_scorer, sentence_weight=100)
    alone = gistify.compress(text, QUESTION, keep=0.3, method="reinforce", scorer=tiny_scorer)
    # 35 sentences: 2 partial with the weight (the one the budget ran out in, and a short word the greedy fill
    # took from the next), 25 without it
    assert partial_sentences(grouped) <= 2 and partial_sentences(alone) >= 10
    assert abs(grouped.tokens_out - grouped.target_tokens) <= 1
    with pytest.raises(ValueError, match="sentence_weight must be a number in"):
        ContextualReinforcement(sentence_weight=-1)
