"""`gistify serve` in front of the APIs people use, with the real clients: the `openai` client (chat,
responses) and the `anthropic` client (messages) talk to the proxy, which talks to a stub upstream that records
what it is sent (tests/serve_stubs.py). The scorer is the embedded SmolLM2. Also: the gate against a fast and
a slow upstream, the retrieve tool answered by the proxy, the report at the end of streams, /stats, and two
proxy processes sharing one real Redis server (with restarts, and with Redis stopped mid-run)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys

import pytest

from conftest import SERVE_TEST
from gistify.serve.settings import Settings
from serve_stubs import RedisServer, Stub, answer, free_port, serving, wait_healthy

with contextlib.suppress(ImportError):  # the serve-test extra; missing, the `needs` mark skips (CI: fails) each test
    import anthropic
    import httpx
    import openai

pytestmark = [pytest.mark.real, pytest.mark.needs("starlette", "httpx", "openai", "anthropic", install=SERVE_TEST)]

ROWS = [
    {"id": 4100 + i, "city": ["Lyon", "Oslo", "Kyoto", "Lima"][i % 4],
     "status": ["shipped", "pending", "cancelled"][i % 3],
     "note": f"The courier left parcel {4100 + i} at the back door, as the customer asked on the phone."}
    for i in range(34)
]  # fmt: skip
TOOL_JSON = json.dumps({"query": "recent orders", "results": ROWS}, indent=2)  # about 2,000 SmolLM2 tokens
QUESTION = "Which orders were cancelled?"


@pytest.fixture(scope="module")
def scorer():
    import torch

    import gistify

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield gistify.Scorer.load()
    torch.set_num_threads(threads)


def _settings(upstream: str, **changes) -> Settings:
    # compress_ms_per_1k given and no probe: nothing timed at start; latency_price 0: the gate weighs dollars
    base = dict(upstream=upstream, min_tokens=64, keep=0.5, compress_ms_per_1k=500.0, latency_price=0.0, probe=False)
    return Settings(**(base | changes))


@pytest.fixture(scope="module")
def proxy(scorer):
    with Stub() as stub, serving(_settings(stub.url), scorer) as url:
        yield url, stub


def _tokens(scorer, text: str) -> int:
    return len(scorer.tokenizer.encode(text, add_special_tokens=False))


def _check_json(scorer, sent: str) -> dict:
    """The tool result as it arrived upstream: parseable, at most 60% of the tokens, the kept rows intact."""
    data = json.loads(sent)
    n_in, n_out = _tokens(scorer, TOOL_JSON), _tokens(scorer, sent)
    assert 1800 <= n_in <= 2400 and n_out <= 0.6 * n_in, (n_in, n_out)
    assert data["gistify"].startswith("g") and "gistify_retrieve" in data["gistify"]
    for row in data.get("results", []):
        if isinstance(row, dict):
            original = next((r for r in ROWS if all(r.get(k) == v for k, v in row.items() if k != "note")), None)
            assert original is not None, row  # kept members keep their keys and values
    return data


def test_chat_tool_json_compressed_parseable_and_the_question_untouched(proxy, scorer):
    url, stub = proxy
    messages = [
        {"role": "system", "content": "You answer in a few words."},
        {"role": "user", "content": "Look up the orders."},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "orders", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": TOOL_JSON},
        {"role": "user", "content": QUESTION},
    ]  # fmt: skip
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-client", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="stub", messages=messages)
    assert int(raw.headers["x-gistify-compressed"]) == 1
    report = raw.parse().model_extra["gistify"]
    tool = next(c for c in report["contents"] if c["at"] == "messages[3]")
    assert tool["action"] == "compressed" and tool["kind"] == "json" and tool["gate"]["reason"] == "pays in dollars"
    sent = stub.last("/chat/completions")
    _check_json(scorer, sent["messages"][3]["content"])
    assert f'"content":{json.dumps(QUESTION)}' in stub.raw("/chat/completions").decode()  # byte for byte
    assert sent["messages"][:3] == messages[:3] and sent["messages"][4] == messages[4]
    assert sent["tools"][-1]["function"]["name"] == "gistify_retrieve"  # offered: the content has a handle


def test_responses_function_output_compressed(proxy, scorer):
    url, stub = proxy
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-client", max_retries=0)
    items = [
        {"role": "user", "content": "Look up the orders."},
        {"type": "function_call", "call_id": "f1", "name": "orders", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "f1", "output": TOOL_JSON},
        {"role": "user", "content": QUESTION},
    ]
    r = client.responses.create(model="stub", input=items, instructions="Answer in a few words.")
    assert r.output_text == "stub answer" and r.model_extra["gistify"]["compressed"] == 1
    sent = stub.last("/responses")
    _check_json(scorer, sent["input"][2]["output"])
    assert sent["input"][3] == items[3] and sent["input"][1] == items[1]
    # streamed: the report rides in response.completed
    events = list(client.responses.create(model="stub", input=items, stream=True))
    completed = next(e for e in events if e.type == "response.completed")
    assert completed.response.model_extra["gistify"]["compressed"] == 1 and events[-1] is completed
    assert stub.last("/responses")["input"][2] == sent["input"][2]  # the same bytes, from the store


def test_anthropic_messages_compressed_with_cache_control_in_place(proxy, scorer):
    url, stub = proxy
    client = anthropic.Anthropic(base_url=url, api_key="sk-ant-client", max_retries=0)
    cc = {"type": "ephemeral"}
    system = [{"type": "text", "text": "You answer in a few words.", "cache_control": cc}]
    messages = [
        {"role": "user", "content": "Look up the orders."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "orders", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": TOOL_JSON, "cache_control": cc},
            {"type": "text", "text": QUESTION, "cache_control": cc}]},
    ]  # fmt: skip
    raw = client.messages.with_raw_response.create(model="stub", max_tokens=16, system=system, messages=messages)
    message = raw.parse()
    assert message.content[0].text == "stub answer" and int(raw.headers["x-gistify-compressed"]) == 1
    sent = stub.last("/messages")
    assert sent["system"] == system  # short: unchanged, marker and all
    block, question = sent["messages"][2]["content"]
    assert list(block) == ["type", "tool_use_id", "content", "cache_control"] and block["cache_control"] == cc
    assert question == messages[2]["content"][1]  # the question and its marker, as they were
    assert stub.bodies[-1][1].count(b'"cache_control"') == 3
    _check_json(scorer, block["content"])
    # streamed: the report rides in message_delta
    with client.messages.stream(model="stub", max_tokens=16, system=system, messages=messages) as stream:
        events = list(stream)
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.model_extra["gistify"]["compressed"] == 1


def test_chat_stream_ends_with_the_report(proxy):
    url, _ = proxy
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-client", max_retries=0)
    messages = [{"role": "tool", "tool_call_id": "c", "content": TOOL_JSON}, {"role": "user", "content": QUESTION}]
    chunks = list(client.chat.completions.create(model="stub", messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "stub answer"
    last = chunks[-1]  # the chunk that says the answer is finished carries the report
    assert last.choices[0].finish_reason == "stop" and last.model_extra["gistify"]["compressed"] == 1


def test_the_gate_measures_its_upstream(scorer):
    """The same request against a stub that reads 50,000 tokens/s and one that reads 200 tokens/s, at a price
    of $0: the probe at start measures each, and only the slow one is worth compressing."""
    messages = [{"role": "tool", "tool_call_id": "c", "content": TOOL_JSON}, {"role": "user", "content": QUESTION}]
    verdicts = {}
    for tps in (50_000, 200):
        with Stub(prefill_tps=tps) as stub:
            settings = _settings(stub.url, price_per_mtok=0.0, latency_price=36.0, compress_ms_per_1k=None, probe=True)
            with serving(settings, scorer) as url:
                client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
                raw = client.chat.completions.with_raw_response.create(model="stub", messages=messages)
                gate = raw.parse().model_extra["gistify"]["contents"][0]["gate"]
                verdicts[tps] = (int(raw.headers["x-gistify-compressed"]), gate)
                stats = httpx.get(url + "/stats").json()
    fast, slow = verdicts[50_000], verdicts[200]
    assert fast[0] == 0 and not fast[1]["compress"] and fast[1]["prefill_from"] == "probe"
    assert fast[1]["reason"].startswith("costs more than it saves")
    assert slow[0] == 1 and slow[1]["compress"] and slow[1]["reason"] == "pays in time"
    assert slow[1]["prefill_tps"] < 1000 < fast[1]["prefill_tps"] and slow[1]["compress_from"] == "measured"
    assert stats["compressed"] == 1 and stats["tokens_out"] < stats["tokens_in"] and stats["usd_saved"] == 0


NOTE_4117 = next(r["note"] for r in ROWS if r["id"] == 4117)


def _retrieve_script(path: str, body: dict) -> dict | None:
    """A model that needs order 4117's note on the second question: when the note it was sent is not whole, it
    calls gistify_retrieve (query "4117") with the handle it finds in the tool result, then answers from the
    lines the proxy gives back. Chat completions and Anthropic messages."""
    anthropic_api = path.endswith("/messages")
    messages = body["messages"]
    if anthropic_api:
        blocks = [b for m in messages if isinstance(m["content"], list) for b in m["content"]]
        tool = next(b["content"] for b in blocks if b.get("type") == "tool_result" and b["tool_use_id"] == "t0")
        got = next((b["content"] for b in blocks if b.get("type") == "tool_result" and b["tool_use_id"] == "r1"), None)
        asked = messages[-1]["content"] if isinstance(messages[-1]["content"], str) else ""
    else:
        tool = next(m["content"] for m in messages if m["role"] == "tool" and m["tool_call_id"] == "t0")
        got = next((m["content"] for m in messages if m["role"] == "tool" and m["tool_call_id"] == "r1"), None)
        asked = messages[-1]["content"] if messages[-1]["role"] == "user" else ""
    if got is not None:
        text = "note: " + ("whole" if NOTE_4117 in got else "missing")
    elif "note" not in asked:
        text = "4102 and others"  # the first question needs no dropped detail
    elif NOTE_4117 in tool:
        text = "note: sent whole"
    else:
        handle = json.loads(tool)["gistify"].split(":")[0]
        args = {"handle": handle, "query": "4117"}
        data = answer(path, body, "")
        if anthropic_api:
            use = {"type": "tool_use", "id": "r1", "name": "gistify_retrieve", "input": args}
            return data | {"stop_reason": "tool_use", "content": [use]}
        call = {"id": "r1", "type": "function", "function": {"name": "gistify_retrieve", "arguments": json.dumps(args)}}
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        data["choices"][0] |= {"finish_reason": "tool_calls", "message": message}
        return data
    return answer(path, body, text)


def test_retrieve_is_answered_by_the_proxy(scorer):
    """A conversation whose second question needs a detail that compression dropped (order 4117's note, cut to
    fewer words): the model calls gistify_retrieve, the proxy answers it from the original and asks again, and
    the client sees only the final answer; with the openai client (chat, whole and streamed) and the anthropic
    client (messages)."""
    first = "Which orders were cancelled?"
    second = "What exactly does the note of order 4117 say?"
    chat = [{"role": "assistant", "content": None, "tool_calls": [
                {"id": "t0", "type": "function", "function": {"name": "orders", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t0", "content": TOOL_JSON}]  # fmt: skip
    turns = [{"role": "user", "content": "Look up the orders."}]
    with Stub(script=_retrieve_script) as stub, serving(_settings(stub.url), scorer) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        r1 = client.chat.completions.create(model="stub", messages=[*turns, *chat, {"role": "user", "content": first}])
        assert r1.choices[0].message.content == "4102 and others" and len(stub.bodies) == 1
        sent = json.loads(stub.bodies[0][1])["messages"][2]["content"]
        assert NOTE_4117 not in sent and "4117" in sent  # the note was cut: the detail is gone from what was sent
        answered = {"role": "assistant", "content": "4102 and others"}
        history = [*turns, *chat, {"role": "user", "content": first}, answered, {"role": "user", "content": second}]
        r2 = client.chat.completions.create(model="stub", messages=history)
        assert r2.choices[0].message.content == "note: whole" and not r2.choices[0].message.tool_calls
        assert r2.model_extra["gistify"]["retrieved"] == 1 and len(stub.bodies) == 3  # the proxy asked twice
        again = json.loads(stub.bodies[2][1])["messages"]
        assert again[-2]["tool_calls"][0]["function"]["name"] == "gistify_retrieve"
        assert again[-1]["tool_call_id"] == "r1" and NOTE_4117 in again[-1]["content"]
        assert again[:-2] == json.loads(stub.bodies[1][1])["messages"]  # the conversation, then the call and answer
        chunks = list(client.chat.completions.create(model="stub", messages=history, stream=True))  # streamed
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "note: whole"
        assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)  # the proxy's call stays hidden
        assert chunks[-1].model_extra["gistify"]["retrieved"] == 1 and len(stub.bodies) == 5

        claude = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
        tool = [{"role": "user", "content": "Look up the orders."},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t0", "name": "orders", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t0", "content": TOOL_JSON},
                                             {"type": "text", "text": first}]},
                {"role": "assistant", "content": "4102 and others"},
                {"role": "user", "content": second}]  # fmt: skip
        m = claude.messages.create(model="stub", max_tokens=16, messages=tool)
        assert [b.type for b in m.content] == ["text"] and m.content[0].text == "note: whole"
        assert m.model_extra["gistify"]["retrieved"] == 1
        metrics = httpx.get(url + "/metrics").text
        stats = httpx.get(url + "/stats?format=table").text
    assert "gistify_retrieve_calls_total 3.0" in metrics
    assert "retrieve calls                 3" in stats and "dollars saved" in stats


# -- replicas sharing a Redis server --------------------------------------------------------------------------


def _start_proxy(upstream: str, cache: str, model_dir) -> tuple[subprocess.Popen, str]:
    """`gistify serve` as a user starts it, with the tiny random model as scorer (a fast start); --max-risk 1:
    that model's choices would often trip the guard, and what is tested here is the bytes."""
    port = free_port()
    cmd = [sys.executable, "-m", "gistify.cli", "serve", "--upstream", upstream, "--port", str(port), "--cache", cache,
           "--model", str(model_dir), "--min-tokens", "32", "--keep", "0.4", "--compress-ms-per-1k", "1",
           "--latency-price", "0", "--no-probe", "--max-risk", "1", "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url + "/healthz", 180, "gistify serve")
    return proc, url


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_replicas_sharing_redis_send_the_same_bytes(tmp_path, tiny_model_dir):
    from pathlib import Path

    prose = (Path(__file__).parent / "data" / "aardwolf.txt").read_text(encoding="utf-8")
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    docs = [prose[:1500], TOOL_JSON, prose[1500:3000]]
    questions = ["What does the aardwolf eat?", "Which orders were cancelled?", "Where does it live?", "Thanks!"]

    def turn(k: int) -> dict:
        """Turn k of one conversation: k tool results, k questions asked (each earlier one answered)."""
        messages = [{"role": "system", "content": "Answer briefly."}]
        for i in range(k):
            messages += [{"role": "user", "content": questions[i]},
                         {"role": "tool", "tool_call_id": f"c{i}", "content": docs[i % len(docs)]}]  # fmt: skip
            if i < k - 1:
                messages.append({"role": "assistant", "content": "Noted."})
        return {"model": "stub", "max_tokens": 8, "messages": messages}

    procs = []
    with Stub() as stub:
        try:
            a, url_a = _start_proxy(stub.url, redis_server.url, tiny_model_dir)
            procs.append(a)
            b, url_b = _start_proxy(stub.url, redis_server.url, tiny_model_dir)
            procs.append(b)

            def send(url: str, k: int) -> bytes:
                r = httpx.post(url + "/v1/chat/completions", json=turn(k), timeout=120)
                assert r.status_code == 200, r.text
                return stub.raw("/chat/completions")

            sent = {}
            for k, url in ((1, url_a), (2, url_b), (3, url_a)):  # the turns alternate between the replicas
                sent[k] = send(url, k)
            assert b'"gistify_retrieve"' in sent[1] and json.loads(sent[1])["messages"][2]["content"] != docs[0]
            for k in (2, 3):  # each turn's messages start with the bytes of the turn before's messages
                before = sent[k - 1][: sent[k - 1].index(b'],"tools":')]
                assert sent[k].startswith(before[: before.rindex(b"}")]), k
            assert send(url_b, 1) == sent[1] and send(url_a, 2) == sent[2]  # whichever gets the turn
            _stop(a)
            a, url_a = _start_proxy(stub.url, redis_server.url, tiny_model_dir)  # a restart: an empty memory
            procs.append(a)
            assert send(url_a, 3) == sent[3]
            redis_server.stop()  # Redis goes away mid-run: no request fails
            failed = 0
            for k, url in ((3, url_a), (3, url_b), (1, url_b), (2, url_a)):
                r = httpx.post(url + "/v1/chat/completions", json=turn(k), timeout=120)
                failed += r.status_code != 200
                if r.status_code == 200:
                    assert stub.raw("/chat/completions") == sent[k]  # seen before: still the same bytes
            assert failed == 0
            extra = turn(3)
            extra["messages"].append({"role": "tool", "tool_call_id": "new", "content": prose[3000:4500]})
            assert httpx.post(url_b + "/v1/chat/completions", json=extra, timeout=120).status_code == 200
            degraded = httpx.get(url_b + "/metrics").text
            assert "gistify_store_degraded_total" in degraded and "gistify_store_degraded_total 0.0" not in degraded
        finally:
            for p in procs:
                if p.poll() is None:
                    _stop(p)
            redis_server.stop()
