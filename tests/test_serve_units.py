"""`gistify serve`'s pure parts, without a model or a network: the risk report, the structure spans, the
break-even gate, the prompt split, the settings."""

from __future__ import annotations

import argparse

import pytest

from gistify.serve.fidelity import risk
from gistify.serve.gate import Gate
from gistify.serve.policy import split_prompt, structure_spans
from gistify.serve.settings import Settings, add_arguments, parse_size

SOURCE = (
    "The door is not locked. The timeout is 30 seconds. Call max_retries before the office in Paris closes. "
    "NASA approved the plan."
)


def test_risk_nothing_lost():
    r = risk(SOURCE, SOURCE)
    assert r["score"] == 0 and not r["meaning_changed"] and not r["changed"]
    assert r["counts"] == {"numbers": 1, "negations": 1, "identifiers": 1, "entities": 2}


def test_risk_negation_dropped_from_a_kept_clause_changes_meaning():
    r = risk(SOURCE, SOURCE.replace("is not locked", "is locked"))
    assert r["meaning_changed"]
    assert [c["kind"] for c in r["changed"]] == ["negation"]
    assert "[not] locked" in r["changed"][0]["context"]


def test_risk_whole_clause_dropped_loses_information_but_changes_no_meaning():
    r = risk(SOURCE, SOURCE.replace("The door is not locked. ", ""))
    assert not r["meaning_changed"] and not r["changed"]
    assert len(r["lost"]["negations"]) == 1 and r["score"] > 0


def test_risk_number_dropped_from_its_label():
    r = risk(SOURCE, SOURCE.replace(" 30 seconds", " seconds"))
    assert r["meaning_changed"] and r["changed"][0]["kind"] == "number" and r["lost"]["numbers"] == ["30"]


def test_risk_question_terms_and_entities():
    short = SOURCE.replace(" in Paris", "").replace("NASA approved the plan.", "")
    r = risk(SOURCE, short, question="When does the office in Paris close?")
    assert r["question_lost"] == ["Paris"] and r["meaning_changed"]
    assert r["lost"]["entities"] == ["NASA", "Paris"]
    # a name gone from a kept phrase makes the text say less, not something false: in the score only
    assert not risk(SOURCE, short)["meaning_changed"]


def test_risk_aligns_repeated_words_and_is_fast():
    import time

    src = " ".join(f"Row {i}: the value is not {i} and the flag is set." for i in range(600))
    words = src.split()
    # every "not" dropped, and every other row's "flag is set." with it: the repeated words must still align
    kept = " ".join(w for k, w in enumerate(words) if w != "not" and not (k // 12 % 2 and k % 12 >= 9))
    t0 = time.perf_counter()
    r = risk(src, kept)
    assert time.perf_counter() - t0 < 2
    assert len(r["changed"]) == 600 and all(c["kind"] == "negation" for c in r["changed"])


def test_structure_spans():
    assert structure_spans('{"a": [1, 2, 3], "b": "text"}') is None  # the whole content is JSON
    text = 'Intro words.\n```python\nx = 1\n```\nThen {"id": 7, "ok": true} and [1] end.'
    spans = structure_spans(text)
    assert [text[s:e] for s, e in spans] == ["```python\nx = 1\n```", '{"id": 7, "ok": true}']
    assert structure_spans("plain prose, no brackets") == []
    assert structure_spans("[" * 5000) == []  # bounded work on bracket soup


def test_gate_formula():
    gate = Gate(price_per_mtok=3.0, prefill_tps=1000, latency_price=36.0, compress_ms_per_1k=100)
    d = gate.decide(2000, 1000)  # C = 0.2 s, F = 1 s, M = 0.003 $
    assert d.compress and d.saved_tokens == 1000
    assert d.compress_s == pytest.approx(0.2) and d.prefill_s_saved == pytest.approx(1.0)
    assert d.gain_usd == pytest.approx(0.003 + 0.8 * 0.01)
    slow = Gate(price_per_mtok=0.0, prefill_tps=5000, latency_price=36.0, compress_ms_per_1k=10_000)
    assert not slow.decide(2000, 1000).compress  # 20 s of compressing to save 0.2 s of free prefill
    assert Gate(0.0, 5000, 36.0, 10_000, enabled=False).decide(2000, 1000).compress
    assert not gate.decide(100, 100).compress  # nothing to save


def test_split_prompt():
    assert split_prompt("Doc line.\n\nMore doc.\n\nQ: what?") == ("Doc line.\n\nMore doc.", "\n\n", "Q: what?")
    assert split_prompt("one paragraph") == ("", "", "one paragraph")


def test_settings():
    assert parse_size("20MB") == 20 << 20 and parse_size("512k") == 512 << 10 and parse_size("100") == 100
    p = argparse.ArgumentParser()
    add_arguments(p)
    s = Settings.from_args(p.parse_args(["--upstream", "https://api.example.com/v1", "--tokens", "300"]))
    assert s.upstream_base == "https://api.example.com" and s.keep is None and s.tokens == 300
    assert s.host == "127.0.0.1" and s.protect_negations and s.max_body == 20 << 20
    assert Settings().keep == 0.5
    with pytest.raises(ValueError, match="upstream"):
        Settings(upstream="localhost:8081")
    with pytest.raises(SystemExit):
        p.parse_args(["--upstream", "http://x", "--keep", "0.5", "--tokens", "3"])


def test_compressor_keeps_code_and_json_and_caches(tiny_scorer):
    from pathlib import Path

    from gistify.serve.policy import Compressor, plan_chat

    prose = (Path(__file__).parent / "data" / "aardwolf.txt").read_text(encoding="utf-8")
    settings = Settings(upstream="http://127.0.0.1:9", min_tokens=20, keep=0.3, max_risk=1.0, latency_price=0.0)
    comp = Compressor(settings, tiny_scorer)
    comp.gate = Gate(settings.price_per_mtok, settings.prefill_tps, settings.latency_price, 1.0)
    code = "```python\ndef area(r):\n    return 3.14159 * r * r\n```"
    data = '{"id": 7, "tags": ["a", "b"], "ok": true}'
    text = f"{prose[:1200]}\n{code}\n{prose[1200:2000]} The record was {data} at the end."
    out = comp.content(text, "What does the aardwolf eat?")
    assert out.action == "compressed" and out.tokens_out < out.tokens_in and not out.cached
    assert code in out.text and data in out.text
    again = comp.content(text, "A different question, later in the conversation")
    assert again.cached and again.text == out.text  # the same bytes whatever the later question
    body = {"model": "m", "messages": [
        {"role": "tool", "content": '{"rows": [' + ", ".join(str(i) for i in range(200)) + "]}"},
        {"role": "assistant", "content": text},
        {"role": "user", "content": text},
    ]}  # fmt: skip
    new, report = plan_chat(body, comp)
    assert new is body  # whole JSON, an assistant turn and the question: nothing to change
    assert [c["action"] for c in report.contents] == ["structured", "other_role", "question"]


def test_a_failing_compressor_sends_the_content_unchanged(tiny_scorer):
    from gistify.serve.metrics import Metrics
    from gistify.serve.policy import Compressor

    settings = Settings(upstream="http://127.0.0.1:9", min_tokens=5, method="no-such-method", gate=False)
    comp = Compressor(settings, tiny_scorer, Metrics())
    text = "A content long enough to be compressed, but the method does not exist. " * 3
    out = comp.content(text, "question?")
    assert out.action == "failed" and out.text == text
    assert 'gistify_errors_total{kind="compress_failed"} 1.0' in comp.metrics.render().decode()


def test_compressor_cost_is_measured(tiny_scorer):
    from gistify.serve.policy import Compressor

    comp = Compressor(Settings(upstream="http://127.0.0.1:9", method="selfinfo"), tiny_scorer)
    assert 0 < comp.measure(64) < 60_000
