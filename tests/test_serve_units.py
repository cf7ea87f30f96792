"""`gistify serve`'s parts, without the embedded model or an upstream: the structure rules, the gate and its
measured figures, the stores (a real Redis server for the shared one), the retrieve tool, the planners of the
four APIs, the settings, and the app's own answers (errors, /metrics and /stats behind the key)."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from conftest import SERVE_TEST
from gistify.serve.gate import Cost, Gate, Speeds
from gistify.serve.plans import split_prompt
from gistify.serve.policy import MORE, Outcome, count_trimmed, is_json, json_changed_strings, structure_spans
from gistify.serve.settings import Settings, add_arguments, parse_size
from gistify.serve.store import MemoryStore, RedisStore, open_store
from serve_stubs import RedisServer


def test_structure_spans_and_whole_json():
    assert is_json('{"a": [1, 2, 3], "b": "text"}') and is_json(" [1, 2] \n") and not is_json("{not json}")
    text = 'Intro words.\n```python\nx = 1\n```\nThen {"id": 7, "ok": true} and [1] end.'
    spans = structure_spans(text)
    assert [text[s:e] for s, e in spans] == ["```python\nx = 1\n```", '{"id": 7, "ok": true}']
    assert structure_spans("plain prose, no brackets") == []
    assert structure_spans("[" * 5000) == []  # bounded work on bracket soup


def test_trimmed_arrays_are_counted():
    source = {"results": [{"id": i, "tags": ["a", "b"]} for i in range(5)], "meta": {"ids": [1, 2, 3]}}
    output = {"results": [{"id": 0, "tags": ["a"]}, {"id": 3}], "meta": {"ids": [1, 2, 3]}}
    counted = count_trimmed(source, output)
    assert counted["results"][-1] == MORE.format(n=3) and len(counted["results"]) == 3
    assert counted["results"][0] == {"id": 0, "tags": ["a"]}  # elements of a trimmed array: not aligned, as they are
    assert counted["meta"] == {"ids": [1, 2, 3]}
    same = [{"tags": ["a", "b", "c"]}]
    assert count_trimmed(same, [{"tags": ["a"]}]) == [{"tags": ["a", MORE.format(n=2)]}]  # same length: walked


def test_json_risk_reads_only_the_strings_that_lost_words():
    source = {"a": "The door is not locked and the code is 4411 today.", "b": "short", "c": "gone entirely"}
    output = {"a": "The door is locked and the code is today.", "b": "short"}
    before, after = json_changed_strings(source, output)
    assert before == source["a"] and after == output["a"]  # "c" dropped whole: counted, not read
    assert json_changed_strings(source, {"b": "short"}) == ("", "")


def test_a_number_inside_a_kept_identifier_is_not_lost():
    from gistify.text.fidelity import risk

    source = "Shipping log 7731. The delivery code is BLUE-HERON-58. The van was late."
    assert risk(source, "Shipping log 7731. code BLUE-HERON-58.")["lost_counts"]["numbers"] == 0
    assert risk(source, "Shipping log 7731. The van was late.")["lost_counts"]["numbers"] == 1


def test_gate_formula_and_its_figures():
    speeds, cost = Speeds(5000), Cost(100, given=True)
    gate = Gate(price_per_mtok=3.0, speeds=speeds, latency_price=36.0, cost=cost)
    d = gate.decide(2000, 1000)  # at the default 5000 tokens/s: C = 0.2 s, F = 0.2 s, M = 0.003 $
    assert d.compress and d.prefill_from == "default" and d.prefill_tps == 5000 and d.reason == "pays in dollars"
    assert d.compress_s == pytest.approx(0.2) and d.prefill_s_saved == pytest.approx(0.2)
    assert speeds.observe("m", 100, 1.0) is None  # too few tokens to tell the prefill from the round trip
    assert speeds.observe("m", 1000, 1.0) == 1000  # measured: 1000 tokens/s
    d = gate.decide(2000, 1000, "m")
    assert d.prefill_from == "measured" and d.prefill_s_saved == pytest.approx(1.0)
    assert d.gain_usd == pytest.approx(0.003 + 0.8 * 0.01) and d.reason == "pays in dollars and time"
    assert gate.decide(2000, 1000, "other").prefill_from == "upstream"  # another model of the same upstream
    speeds.observe("m", 2000, 1.0)  # smoothed, not replaced
    assert speeds.get("m")[0] == pytest.approx(0.7 * 1000 + 0.3 * 2000)
    free = Gate(0.0, Speeds(50_000), 36.0, Cost(10_000, given=True))
    d = free.decide(2000, 1000)  # 20 s of compressing to save 0.02 s of free prefill
    assert not d.compress and d.reason.startswith("costs more than it saves")
    assert Gate(0.0, Speeds(50_000), 36.0, Cost(10_000, True), enabled=False).decide(2000, 1000).compress
    assert not gate.decide(100, 100).compress  # nothing to save
    measured = Cost(100, given=False)
    measured.observe(1000, 0.2)  # 200 ms per 1k this time
    assert measured.value == pytest.approx(0.7 * 100 + 0.3 * 200) and measured.source == "measured"
    # the break-even cost: the proxy's defaults at keep 0.5 of 2,000 tokens break even at 250 ms per 1k
    default = Gate(3.0, Speeds(5000), 36.0, Cost(0, given=True))
    assert default.break_even_ms_per_1k(2000, 1000) == pytest.approx(250.0)
    for ms, verdict in ((249.0, True), (251.0, False)):
        assert Gate(3.0, Speeds(5000), 36.0, Cost(ms, given=True)).decide(2000, 1000).compress is verdict
    assert default.break_even_ms_per_1k(100, 100) == 0.0  # nothing to save
    assert Gate(3.0, Speeds(5000), 0.0, cost).break_even_ms_per_1k(2000, 1000) == float("inf")  # time is free


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
    assert s.max_risk == 0.2 and s.retrieve and s.cache is None and s.probe is None
    assert Settings().keep == 0.5
    with pytest.raises(ValueError, match="upstream"):
        Settings(upstream="localhost:8081")
    with pytest.raises(ValueError, match="cache"):
        Settings(cache="memcached://x")
    with pytest.raises(ValueError, match="--upstream"):
        Settings.from_args(p.parse_args([]))
    assert p.parse_args(["stats", "--url", "http://127.0.0.1:9"]).action == "stats"
    with pytest.raises(SystemExit):
        p.parse_args(["--upstream", "http://x", "--keep", "0.5", "--tokens", "3"])


# -- the compressor, on a tiny random model ------------------------------------------------------------------


def _compressor(tiny_scorer, **changes):
    from gistify.serve.policy import Compressor

    base = dict(upstream="http://127.0.0.1:9", min_tokens=20, keep=0.3, max_risk=1.0, latency_price=0.0)
    settings = Settings(**(base | changes))
    comp = Compressor(settings, tiny_scorer)
    comp.gate = Gate(settings.price_per_mtok, Speeds(settings.prefill_tps), settings.latency_price, Cost(1.0, True))
    return comp


def test_compressor_keeps_code_and_json_in_prose_and_remembers(tiny_scorer):
    from pathlib import Path

    from gistify.serve.plans import plan_chat

    prose = (Path(__file__).parent / "data" / "aardwolf.txt").read_text(encoding="utf-8")
    comp = _compressor(tiny_scorer)
    code = "```python\ndef area(r):\n    return 3.14159 * r * r\n```"
    data = '{"id": 7, "tags": ["a", "b"], "ok": true}'
    text = f"{prose[:1200]}\n{code}\n{prose[1200:2000]} The record was {data} at the end."
    out = comp.content(text, "What does the aardwolf eat?")
    assert out.action == "compressed" and out.tokens_out < out.tokens_in and not out.cached
    assert code in out.text and data in out.text and out.handle and out.handle.startswith("g")
    again = comp.content(text, "A different question, later in the conversation")
    assert again.cached and again.text == out.text  # the same bytes whatever the later question
    body = {"model": "m", "messages": [
        {"role": "assistant", "content": text},
        {"role": "user", "content": text},
    ]}  # fmt: skip
    new, report = plan_chat(body, comp)
    assert new is body  # an assistant turn and the question: nothing to change
    assert [c["action"] for c in report.contents] == ["other_role", "question"]


def test_whole_json_is_compressed_structurally_and_stays_parseable(tiny_scorer):
    from gistify.serve.retrieve import marked

    comp = _compressor(tiny_scorer, keep=0.4)
    rows = [{"id": i, "city": ["Lyon", "Oslo", "Lima"][i % 3], "note": f"parcel {i} left at the back door"}
            for i in range(40)]  # fmt: skip
    text = json.dumps({"query": "orders", "results": rows}, indent=2)
    out = comp.content(text, "Which parcels went to Oslo?")
    assert out.action == "compressed" and out.kind == "json" and out.tokens_out <= 0.5 * out.tokens_in
    data = json.loads(out.text)
    assert set(data) <= {"query", "results"}
    sent = json.loads(marked(out))  # the handle rides in a member: still JSON
    assert sent["gistify"].startswith(out.handle) and "gistify_retrieve" in sent["gistify"]
    theirs = json.loads(marked(Outcome('{"gistify":1}', 40, 20, "compressed", kind="json", handle="gabc")))
    assert theirs["gistify"] == 1 and theirs["_gistify"].startswith("gabc")  # the client's own key untouched
    array = json.loads(marked(Outcome("[1,2]", 40, 20, "compressed", kind="json", handle="gabc")))
    assert array[:2] == [1, 2] and array[2].startswith("gabc: 20 of 40 tokens kept")
    prose = marked(Outcome("short text", 40, 20, "compressed", handle="gabc"))
    assert prose == "short text\n[gabc: 20 of 40 tokens kept; gistify_retrieve gives the original]"


@pytest.mark.needs("prometheus_client", install=SERVE_TEST)
def test_a_failing_compressor_sends_the_content_unchanged(tiny_scorer):
    from gistify.serve.metrics import Metrics
    from gistify.serve.policy import Compressor

    settings = Settings(upstream="http://127.0.0.1:9", min_tokens=5, method="no-such-method", gate=False)
    comp = Compressor(settings, tiny_scorer, Metrics())
    text = "A content long enough to be compressed, but the method does not exist. " * 3
    out = comp.content(text, "question?")
    assert out.action == "failed" and out.text == text and out.handle is None
    assert 'gistify_errors_total{kind="compress_failed"} 1.0' in comp.metrics.render().decode()


def test_compressor_cost_is_measured(tiny_scorer):
    from gistify.serve.policy import Compressor

    comp = Compressor(Settings(upstream="http://127.0.0.1:9", method="selfinfo"), tiny_scorer)
    compress, timed = comp._compress, []

    def spy(text, *args, **kw):  # the real compressor, its inputs recorded
        timed.append(comp.count(text))
        return compress(text, *args, **kw)

    comp._compress = spy
    cost = comp.measure(64)
    # a warm-up on a quarter of the text, then one timed run over at least 64 tokens; the figure is per 1k
    # tokens. How fast it is (a wall-clock figure) is the harness's to measure, not a unit test's to bound.
    assert len(timed) == 2 and timed[1] >= 64 and timed[0] < timed[1] and 0 < cost < math.inf


def test_a_gate_skip_on_the_default_speed_is_not_remembered(tiny_scorer):
    from pathlib import Path

    prose = (Path(__file__).parent / "data" / "aardwolf.txt").read_text(encoding="utf-8")[:1500]
    comp = _compressor(tiny_scorer, price_per_mtok=0.0, latency_price=36.0)
    comp.gate = Gate(0.0, Speeds(1e9), 36.0, Cost(1.0, True))  # the default speed: compressing cannot pay
    first = comp.content(prose, "q?", "m")
    assert first.action == "gate" and first.gate["prefill_from"] == "default"
    comp.gate.speeds.observe("m", 1000, 100.0)  # the upstream turns out to read 10 tokens/s
    second = comp.content(prose, "q?", "m")
    assert second.action == "compressed" and second.gate["prefill_from"] == "measured" and not second.cached
    assert comp.content(prose, "q?", "m").cached  # decided on measured figures: kept


# -- the stores -------------------------------------------------------------------------------------------------


def test_memory_store_keeps_the_first_decision():
    store = open_store(None, 2)
    assert isinstance(store, MemoryStore) and store.kind == "memory"
    assert store.put("a", {"text": "1"}) == {"text": "1"}
    assert store.put("a", {"text": "2"}) == {"text": "1"}  # the first decision stands
    store.put("b", {"text": "b"})
    store.put("c", {"text": "c"})
    assert store.get("a") is None and store.get("c") == {"text": "c"}  # bounded, least recently used goes
    with pytest.raises(ValueError, match="redis"):
        open_store("memcached://x", 2)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.needs("redis", install=SERVE_TEST)
def test_redis_store_is_shared_survives_restarts_and_degrades(redis_server):
    a, b = RedisStore(redis_server.url, retry_s=0.2), RedisStore(redis_server.url, retry_s=0.2)
    assert a.put("k", {"text": "from a"}) == {"text": "from a"}
    assert b.put("k", {"text": "from b"}) == {"text": "from a"}  # b decided at the same time: a's bytes win
    assert RedisStore(redis_server.url).get("k") == {"text": "from a"}  # a fresh process (a restart) reads it
    redis_server.stop()
    warned = []
    b.on_degrade = lambda: warned.append(1)
    assert b.get("k") == {"text": "from a"}  # seen before: from memory, no call to Redis
    assert b.get("new") is None and b.put("new", {"text": "n"}) == {"text": "n"}  # down: memory, no failure
    assert not b.healthy and b.degraded >= 1 and warned
    redis_server.start()
    import time

    time.sleep(0.3)  # past retry_s: Redis is tried again
    assert b.put("after", {"text": "x"}) == {"text": "x"} and b.healthy
    assert a.get("after") == {"text": "x"}
    assert a.get("new") == {"text": "n"} and not b.unsynced  # decided while Redis was down: written once back


# -- the retrieve tool --------------------------------------------------------------------------------------------


def test_retrieve_offer_answer_and_follow_up():
    from gistify.serve import retrieve

    originals = {"gabc": "line one about cats\nline two about dogs\nline three about cats and birds"}
    assert retrieve.answer('{"handle": "gabc"}', originals) == originals["gabc"]
    assert retrieve.answer({"handle": "gabc", "query": "birds"}, originals) == "line three about cats and birds"
    assert "no content has the handle" in retrieve.answer({"handle": "nope"}, originals)
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    offered = retrieve.offer("chat", chat)
    assert offered["tools"][-1]["function"]["name"] == retrieve.NAME and "tools" not in chat
    assert retrieve.offer("chat", {**chat, "stream": True})["tools"]  # streamed chat: held until the answer shows
    assert retrieve.offer("messages", {**chat, "stream": True}) is None
    assert retrieve.offer("chat", {**chat, "tool_choice": "none"}) is None
    assert retrieve.offer("completion", chat) is None
    assert retrieve.offer("messages", chat)["tools"][-1]["input_schema"]["required"] == ["handle"]
    call = {"id": "c1", "type": "function", "function": {"name": retrieve.NAME, "arguments": '{"handle":"gabc"}'}}
    data = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}
    nxt, _, n = retrieve.follow_up("chat", offered, data, originals)
    assert n == 1 and nxt["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": originals["gabc"]}
    theirs = {"id": "c2", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    data["choices"][0]["message"]["tool_calls"] = [call, theirs]
    nxt, client, n = retrieve.follow_up("chat", offered, data, originals)
    assert nxt is None and n == 0 and client["choices"][0]["message"]["tool_calls"] == [theirs]
    use = {"type": "tool_use", "id": "t1", "name": retrieve.NAME, "input": {"handle": "gabc", "query": "dogs"}}
    nxt, _, n = retrieve.follow_up("messages", offered, {"content": [use]}, originals)
    assert nxt["messages"][-1]["content"][0] == {"type": "tool_result", "tool_use_id": "t1",
                                                 "content": "line two about dogs"}  # fmt: skip
    fc = {"type": "function_call", "call_id": "f1", "name": retrieve.NAME, "arguments": '{"handle":"gabc"}'}
    nxt, _, n = retrieve.follow_up("responses", {"model": "m", "input": "q"}, {"output": [fc]}, originals)
    assert nxt["input"][0] == {"role": "user", "content": "q"} and nxt["input"][-1]["call_id"] == "f1"
    assert retrieve.strip("messages", {"content": [use, {"type": "text", "text": "x"}]})["content"] == [
        {"type": "text", "text": "x"}
    ]


# -- the planners of the four APIs ------------------------------------------------------------------------------


def _fake(tiny_scorer):
    """A compressor whose every compressible content comes out as "<short>" with a handle."""
    comp = _compressor(tiny_scorer)
    seen = []

    def resolve(text, question):
        seen.append((text, question))
        return Outcome("<short>", 100, 10, "compressed", handle="g" + str(len(seen)))

    return comp, resolve, seen


def test_plan_responses(tiny_scorer):
    from gistify.serve.plans import plan_responses

    comp, resolve, seen = _fake(tiny_scorer)
    body = {"model": "m", "instructions": "Be brief.", "input": [
        {"role": "user", "content": "Find the order."},
        {"type": "function_call", "call_id": "f1", "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "f1", "output": '{"rows": [1, 2]}'},
        {"role": "user", "content": [{"type": "input_text", "text": "Which row?"}]},
    ]}  # fmt: skip
    new, report = plan_responses(body, comp, resolve, mark=True)
    assert new["instructions"].startswith("<short>") and new["input"][0]["content"].startswith("<short>")
    assert new["input"][1] == body["input"][1] and new["input"][3] == body["input"][3]  # the question as it was
    assert new["input"][2]["output"].startswith("<short>\n[g")
    assert (
        {q for _, q in seen} == {"Which row?"}
        and report.compressed == 3
        and set(report.originals) == {"g1", "g2", "g3"}
    )
    assert plan_responses({"model": "m", "input": "just a question"}, comp, resolve)[0]["input"] == "just a question"


def test_plan_messages_keeps_cache_control_in_place(tiny_scorer):
    from gistify.serve.plans import plan_messages

    comp, resolve, seen = _fake(tiny_scorer)
    cc = {"type": "ephemeral"}
    body = {"model": "m", "max_tokens": 10,
            "system": [{"type": "text", "text": "A long system prompt.", "cache_control": cc}],
            "messages": [
                {"role": "user", "content": "Look it up."},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "the result", "cache_control": cc},
                    {"type": "text", "text": "What does it say?"}]},
            ]}  # fmt: skip
    new, report = plan_messages(body, comp, resolve)
    assert new["system"] == [{"type": "text", "text": "<short>", "cache_control": cc}]
    block = new["messages"][2]["content"][0]
    assert list(block) == ["type", "tool_use_id", "content", "cache_control"] and block["cache_control"] == cc
    assert block["content"] == "<short>" and new["messages"][2]["content"][1] == body["messages"][2]["content"][1]
    assert new["messages"][1] == body["messages"][1]
    assert [c["action"] for c in report.contents].count("question") == 1 and {q for _, q in seen} == {
        "What does it say?"
    }


# -- the app's own answers ----------------------------------------------------------------------------------------


@pytest.mark.needs("starlette", "httpx", "prometheus_client", install=SERVE_TEST)
def test_bad_requests_name_the_field_and_metrics_need_the_key(tiny_scorer):
    from starlette.testclient import TestClient

    from gistify.serve.app import create_app

    settings = Settings(upstream="http://127.0.0.1:9", compress_ms_per_1k=1.0, probe=False, api_key="k")
    with TestClient(create_app(settings, scorer=tiny_scorer)) as client:
        auth = {"Authorization": "Bearer k"}
        r = client.post("/v1/chat/completions", json={"model": "m", "messages": "hello"}, headers=auth)
        assert r.status_code == 400
        assert r.json()["error"] == {
            "message": "missing required field 'messages' (a non-empty list)",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "bad_request",
        }
        r = client.post("/v1/responses", json={"model": "m"}, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == "input"
        r = client.post("/v1/messages", json={"model": "m", "messages": []}, headers={"x-api-key": "k"})
        assert r.status_code == 400 and r.json()["type"] == "error"  # Anthropic's format on its endpoint
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert client.get("/metrics").status_code == 401 and client.get("/stats").status_code == 401
        assert "gistify_requests_total" in client.get("/metrics", headers=auth).text
        stats = client.get("/stats", headers=auth).json()
        assert stats["requests"] == 0 and stats["usd_saved"] == 0
        assert "dollars saved" in client.get("/stats?format=table", headers=auth).text
        assert client.get("/healthz").json() == {"status": "ok"}  # health stays open
