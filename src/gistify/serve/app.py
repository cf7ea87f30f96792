"""The ASGI app: an OpenAI- and Anthropic-compatible proxy that compresses long contents on the way upstream.

Starlette routes the requests, httpx (one pooled AsyncClient) talks to the upstream, prometheus_client
keeps the counts. A request's body is parsed, counted and compressed in a worker thread (`policy`, `plans`),
so the event loop keeps serving other requests while the scorer works; the upstream's answer is passed back
as it comes, streamed or not, with headers that say what was done (X-Gistify-*) and the `gistify` report: in
a JSON body next to `usage`, and at the end of a stream (in the chunk that carries the finish_reason for chat
and completions, or a chunk of its own before `[DONE]` when none does; inside `response.completed` for
responses; inside `message_delta` for Anthropic's messages).

Compressed: POST /v1/chat/completions, /v1/completions, /v1/responses and Anthropic's /v1/messages; every
other /v1 request passes unchanged. Each answer's prompt tokens and time to first byte (or llama.cpp's own
prompt timings) feed the gate's measure of the upstream's prefill speed. When the model calls the proxy's
`gistify_retrieve` tool, the proxy answers it and asks again (retrieve.py), invisibly to the client, whole
or streamed (chat).

Errors are answered in OpenAI's format, {"error": {"message", "type", "param", "code"}} (Anthropic's,
{"type": "error", "error": {"type", "message"}}, on /v1/messages): 400 for a body that is not JSON or lacks a
field, 413 over --max-body, 401 without the key when --api-key is set (on /metrics and /stats too), 502 when
the upstream cannot be reached, 504 when it does not answer in time. The upstream's own errors pass through
with their status and body. The client's Authorization (or x-api-key) is forwarded unless it carried the
proxy's own key, or --upstream-api-key replaces it, and is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from gistify.serve import retrieve
from gistify.serve.gate import Cost, Gate, Speeds
from gistify.serve.metrics import Metrics
from gistify.serve.plans import PLANNERS, Report
from gistify.serve.policy import Compressor, Outcome
from gistify.serve.settings import Settings
from gistify.serve.sse import Tail, accumulate, chat_delta, data_of, events
from gistify.serve.stats import Stats, table
from gistify.serve.store import open_store

log = logging.getLogger("gistify.serve")
PATHS = {"chat": "/v1/chat/completions", "completion": "/v1/completions", "responses": "/v1/responses",
         "messages": "/v1/messages"}  # fmt: skip

# request headers worth forwarding besides Authorization; everything else (cookies, hop-by-hop) stays here
_FORWARD = ("accept", "user-agent", "openai-organization", "openai-project", "openai-beta", "x-request-id",
            "anthropic-version", "anthropic-beta")  # fmt: skip
# response headers not to copy back: hop-by-hop ones, and those Starlette sets for the body it sends
_DROP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "date", "server"}
)
PROBE_TEXT = "The probe reads this sentence to time the upstream's prefill. " * 24  # about 300 tokens


class ProxyError(Exception):
    """An error answered by the proxy itself, in OpenAI's format (or Anthropic's, on /v1/messages)."""

    def __init__(self, status: int, message: str, kind: str, type_: str = "invalid_request_error", param=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.type, self.param = status, message, kind, type_, param

    def response(self, api: str = "openai") -> JSONResponse:
        if api == "anthropic":
            error = {"type": self.type, "message": self.message}
            return JSONResponse({"type": "error", "error": error}, status_code=self.status)
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.kind}
        return JSONResponse({"error": error}, status_code=self.status)


def dumps(body: Any) -> bytes:
    """The one serialisation of a changed request: compact, UTF-8, keys in the client's order. The same
    request therefore always gives the same bytes upstream."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _bad(message: str, param: str | None = None) -> ProxyError:
    return ProxyError(400, message, "bad_request", param=param)


def _validate(kind: str, body: Any) -> None:
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    if not isinstance(body.get("model"), str):
        raise _bad("missing required field 'model' (a string)", "model")
    if kind in ("chat", "messages"):
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise _bad("missing required field 'messages' (a non-empty list)", "messages")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise _bad(f"messages[{i}] must be an object with a 'role'", f"messages[{i}]")
    elif kind == "responses":
        if not isinstance(body.get("input"), str | list):
            raise _bad("missing required field 'input' (a string or a list of items)", "input")
    else:
        p = body.get("prompt")
        ok = isinstance(p, str) or (isinstance(p, list) and p and all(isinstance(x, str | int | list) for x in p))
        if not ok:
            raise _bad("missing required field 'prompt' (a string or a list)", "prompt")


def prefill_of(data: dict) -> tuple[int, float | None]:
    """(prompt tokens the upstream read, seconds it says it took, when it says) from an answer's JSON:
    llama.cpp's `timings`, or `usage` less the tokens its prompt cache served."""
    timings = data.get("timings")
    if isinstance(timings, dict) and timings.get("prompt_n") and timings.get("prompt_ms"):
        return int(timings["prompt_n"]), float(timings["prompt_ms"]) / 1000
    usage = data.get("usage") or (data.get("response") or {}).get("usage") or (data.get("message") or {}).get("usage")
    if not isinstance(usage, dict):
        return 0, None
    n = usage.get("prompt_tokens") or usage.get("input_tokens") or 0
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    cached = (details.get("cached_tokens") if isinstance(details, dict) else 0) or usage.get("cache_read_input_tokens")
    return max(0, int(n) - int(cached or 0)), None


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Proxy:
    """The proxy's state: settings, the compressor, the upstream client, the metrics, the worker threads."""

    def __init__(self, settings: Settings, scorer: Any = None, http_client: httpx.AsyncClient | None = None):
        self.settings = settings
        self.metrics = Metrics()
        self.stats = Stats(settings.price_per_mtok)
        self.scorer = scorer
        self.client = http_client
        self._own_client = http_client is None
        self.pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="gistify-serve")
        self.compress_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gistify-compress")
        self.compressor: Compressor | None = None
        self.speeds = Speeds(settings.prefill_tps)
        self.inflight: dict[bytes, asyncio.Future] = {}  # content hash -> its compression in progress

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        if s.torch_threads:
            import torch

            torch.set_num_threads(s.torch_threads)
        if self.scorer is None:
            import gistify

            self.scorer = await loop.run_in_executor(self.pool, gistify.Scorer.load, s.model)
        store = open_store(s.cache, s.cache_entries)
        if hasattr(store, "on_degrade"):
            store.on_degrade = self.metrics.store_degraded.inc
        self.compressor = Compressor(s, self.scorer, self.metrics, store=store)
        cost = s.compress_ms_per_1k
        if cost is None:
            cost = await loop.run_in_executor(self.compress_pool, self.compressor.measure, 256)
            log.info("compressor cost measured: %.0f ms per 1k tokens (%s)", cost, s.method)
        self.compressor.gate = Gate(s.price_per_mtok, self.speeds, s.latency_price, Cost(cost, s.compress_ms_per_1k
                                    is not None), enabled=s.gate)  # fmt: skip
        for name, value in (("price_per_mtok", s.price_per_mtok), ("prefill_tps_default", s.prefill_tps),
                            ("latency_price", s.latency_price)):  # fmt: skip
            self.metrics.gate_setting.labels(name).set(value)
        self.metrics.gate_setting.labels("compress_ms_per_1k").set_function(lambda: self.compressor.gate.cost.value)
        if self.client is None:
            self.client = httpx.AsyncClient(
                timeout=httpx.Timeout(s.timeout, connect=s.connect_timeout),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
        if s.probe if s.probe is not None else _is_loopback(s.upstream_base):
            await self.probe()
        log.info("gistify serve: store %s, prefill %.0f tokens/s (%s), compressor %.0f ms per 1k tokens",
                 store.kind, *self.speeds.get(None), cost)  # fmt: skip

    async def probe(self, attempts: int = 20) -> None:
        """Time the upstream's prefill once at start (a local upstream costs nothing to ask): a ~300-token
        chat request for one token, to the first model the upstream lists. Best effort: on any failure the
        default figure stands until the first answers."""
        base = self.settings.upstream_base
        for _ in range(attempts):
            try:
                models = (await self.client.get(base + "/v1/models", timeout=5)).json()
                model = models["data"][0]["id"]
                body = {"model": model, "max_tokens": 1, "temperature": 0,
                        "messages": [{"role": "user", "content": PROBE_TEXT + "Say ok."}]}  # fmt: skip
                t0 = time.perf_counter()
                r = await self.client.post(base + "/v1/chat/completions", json=body, timeout=120)
                seconds = time.perf_counter() - t0
                n, told = prefill_of(r.json())
                tps = self.speeds.observe(model, n, told or seconds, source="probe")
                if tps:
                    log.info("upstream prefill probed: %d tokens in %.2f s (%.0f tokens/s)", n, told or seconds, tps)
                return
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
                await asyncio.sleep(1)
        log.warning("the upstream's prefill could not be probed: %.0f tokens/s is assumed until its first answers",
                    self.settings.prefill_tps)  # fmt: skip

    async def stop(self) -> None:
        if self._own_client and self.client is not None:
            await self.client.aclose()
        if self.compressor is not None:
            self.compressor.store.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.compress_pool.shutdown(wait=False, cancel_futures=True)

    # -- helpers -------------------------------------------------------------------------------------------

    def _check_key(self, request: Request) -> bool:
        """Raise 401 unless the client has the key; True when the client's credentials were the proxy's own
        key (then they are not forwarded)."""
        key = self.settings.api_key
        if not key:
            return False
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        given = [g for g in (request.headers.get("x-gistify-key"), bearer, request.headers.get("x-api-key")) if g]
        ok = [g for g in given if hmac.compare_digest(g.encode(), key.encode())]
        if not ok:
            raise ProxyError(401, "invalid or missing API key for this proxy", "unauthorized", "authentication_error")
        return bool(bearer) and hmac.compare_digest(bearer.encode(), key.encode())

    def _upstream_headers(self, request: Request, own_key: bool) -> dict[str, str]:
        headers = {k: v for k in _FORWARD if (v := request.headers.get(k)) is not None}
        headers["accept-encoding"] = "identity"  # pass the bytes back as they come, streamed or not
        key = self.settings.api_key
        if self.settings.upstream_api_key:
            headers["authorization"] = f"Bearer {self.settings.upstream_api_key}"
        elif not own_key and "authorization" in request.headers:
            headers["authorization"] = request.headers["authorization"]
        x_api_key = request.headers.get("x-api-key")
        if x_api_key and not (key and hmac.compare_digest(x_api_key.encode(), key.encode())):
            headers["x-api-key"] = x_api_key
        return headers

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body
        declared = request.headers.get("content-length", "")
        too_large = ProxyError(413, f"request body over the limit of {limit} bytes (--max-body)", "too_large")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    def _parse(self, kind: str, raw: bytes) -> tuple[dict, dict, Report, dict[str, str | None]]:
        """In a worker thread: parse, check, and plan with what costs no compression. Returns the body, the
        planned body and report (final when nothing is left to compress), and the contents still to compress
        (text -> question)."""
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise _bad(f"the request body is not valid JSON: {e}") from None
        except RecursionError:
            raise _bad("the request body is JSON nested too deeply to read") from None
        _validate(kind, body)
        todo: dict[str, str | None] = {}

        def look(text: str, question: str | None) -> Outcome:
            out = self.compressor.quick(text)
            if out is None:
                todo.setdefault(text, question)
                return Outcome(text, 0, 0, "pending")
            return out

        new, report = PLANNERS[kind](body, self.compressor, look, self.settings.retrieve)
        return body, new, report, todo

    async def _prepare(self, kind: str, raw: bytes) -> tuple[dict, dict, Report]:
        """The body, the body to send upstream, and the report.

        Parsing and counting run in the worker threads; compressions run one at a time in their own thread,
        so that requests with nothing to compress never queue behind them."""
        loop = asyncio.get_running_loop()
        body, new, report, todo = await loop.run_in_executor(self.pool, self._parse, kind, raw)
        if todo:
            model = body.get("model")
            done = {text: await self._compress(text, question, model) for text, question in todo.items()}

            def resolve(text: str, question: str | None) -> Outcome:
                return done.get(text) or self.compressor.content(text, question, model)

            planner = PLANNERS[kind]
            new, report = await loop.run_in_executor(
                self.pool, planner, body, self.compressor, resolve, self.settings.retrieve
            )
        return body, new, report

    async def _compress(self, text: str, question: str | None, model: str | None) -> Outcome:
        """One content's outcome from the compression thread; a request whose content is being compressed
        for another request right now waits for that result instead of queueing behind other compressions."""
        key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
        task = self.inflight.get(key)
        if task is not None:
            out = await asyncio.shield(task)
            return Outcome(**{**out.__dict__, "cached": True, "seconds": 0.0})
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(
            loop.run_in_executor(self.compress_pool, self.compressor.content, text, question, model)
        )
        self.inflight[key] = task
        task.add_done_callback(lambda _: self.inflight.pop(key, None))
        return await asyncio.shield(task)

    async def _send(self, method: str, path: str, headers: dict, content: bytes | None) -> httpx.Response:
        url = self.settings.upstream_base + path
        try:
            request = self.client.build_request(method, url, headers=headers, content=content)
            return await self.client.send(request, stream=True)
        except httpx.TimeoutException:
            msg = f"the upstream did not answer in time ({url})"
            raise ProxyError(504, msg, "upstream_timeout", "upstream_error") from None
        except httpx.HTTPError as e:
            msg = f"the upstream cannot be reached ({url}: {type(e).__name__})"
            raise ProxyError(502, msg, "upstream_unreachable", "upstream_error") from None

    async def _read(self, upstream: httpx.Response) -> bytes:
        try:
            return await upstream.aread()
        except httpx.TimeoutException:
            msg = "the upstream did not finish its answer in time"
            raise ProxyError(504, msg, "upstream_timeout", "upstream_error") from None
        except httpx.HTTPError as e:
            raise ProxyError(502, f"the upstream broke off its answer ({type(e).__name__})", "upstream_unreachable",
                             "upstream_error") from None  # fmt: skip
        finally:
            await upstream.aclose()

    def _observe(self, model: str | None, data: dict, seconds: float) -> None:
        """Feed the upstream's prefill speed with one answer: its prompt tokens over the time to first byte."""
        n, told = prefill_of(data)
        tps = self.speeds.observe(str(model), n, told or seconds)
        if tps:
            self.metrics.prefill_tps.labels(str(model)).set(tps)

    @staticmethod
    def _copy_headers(upstream: httpx.Response) -> dict[str, str]:
        return {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP}

    # -- endpoints -----------------------------------------------------------------------------------------

    async def compress_and_forward(self, request: Request, kind: str) -> Response:
        t0 = time.perf_counter()
        own_key = self._check_key(request)
        raw = await self._read_body(request)
        body, new, report = await self._prepare(kind, raw)
        stream = bool(body.get("stream"))
        offered = retrieve.offer(kind, new) if self.settings.retrieve and report.originals else None
        sent = offered or new
        # unchanged: the client's own bytes; changed: one deterministic serialisation
        content = raw if sent is body else dumps(sent)
        added = time.perf_counter() - t0
        m = self.metrics
        m.added_seconds.observe(added)
        m.tokens_in.inc(report.tokens_in)
        m.tokens_out.inc(report.tokens_out)
        for c in report.contents:
            m.messages.labels("cached" if c.get("cached") else c["action"]).inc()
        self.stats.add(report)
        gistify_headers = {
            "X-Gistify-Tokens-In": str(report.tokens_in),
            "X-Gistify-Tokens-Out": str(report.tokens_out),
            "X-Gistify-Method": report.as_dict()["method"],
            "X-Gistify-Compressed": str(report.compressed),
            "X-Gistify-Fallbacks": str(report.fallbacks),
            "X-Gistify-Added-Ms": f"{added * 1000:.1f}",  # reading, counting, compressing: before forwarding
        }
        headers = self._upstream_headers(request, own_key)
        headers["content-type"] = "application/json"
        model = body.get("model")
        t_sent = time.perf_counter()
        upstream = await self._send("POST", PATHS[kind], headers, content)
        request.state.report = report
        if upstream.status_code >= 400:
            m.errors.labels("upstream_error").inc()
        if stream and upstream.status_code == 200:
            streamed_retrieve = offered is not None and kind == "chat"
            return StreamingResponse(
                self._relay_sse(upstream, kind, report, model, t_sent, *((sent, headers) if streamed_retrieve else ())),
                status_code=upstream.status_code,
                headers={**self._copy_headers(upstream), **gistify_headers},
                background=BackgroundTask(upstream.aclose),
            )
        data_bytes = await self._read(upstream)
        ttfb = time.perf_counter() - t_sent
        status, response_headers = upstream.status_code, self._copy_headers(upstream)
        if status != 200 or "json" not in upstream.headers.get("content-type", ""):
            return Response(data_bytes, status_code=status, headers={**response_headers, **gistify_headers})
        try:
            data = json.loads(data_bytes)
        except ValueError:
            return Response(data_bytes, status_code=status, headers={**response_headers, **gistify_headers})
        if not isinstance(data, dict):
            return Response(data_bytes, status_code=status, headers={**response_headers, **gistify_headers})
        self._observe(model, data, ttfb)
        if offered is not None:
            data = await self._retrieve_loop(kind, sent, data, report, headers)
        data["gistify"] = report.as_dict()
        return Response(dumps(data), status_code=status, headers={**response_headers, **gistify_headers})

    async def _retrieve_loop(self, kind: str, sent: dict, data: dict, report: Report, headers: dict) -> dict:
        """Answer the model's gistify_retrieve calls from the originals and ask again, until it answers
        without them (or --retrieve-rounds is spent); the client gets only the last answer."""
        for _ in range(self.settings.retrieve_rounds):
            nxt, data, calls = retrieve.follow_up(kind, sent, data, report.originals)
            if nxt is None:
                return data
            report.retrieved += calls
            self.stats.retrieved(calls)
            self.metrics.retrieve_calls.inc(calls)
            sent = nxt
            upstream = await self._send("POST", PATHS[kind], headers, dumps(sent))
            body = await self._read(upstream)
            if upstream.status_code != 200:
                self.metrics.errors.labels("upstream_error").inc()
                raise ProxyError(502, f"the upstream answered {upstream.status_code} after a gistify_retrieve call: "
                                 f"{body[:200]!r}", "upstream_error", "upstream_error")  # fmt: skip
            data = json.loads(body)
        return retrieve.strip(kind, data)  # the rounds are spent: the answer without the proxy's calls

    async def _relay_sse(self, upstream: httpx.Response, kind: str, report: Report, model, t_sent: float,
                         sent: dict | None = None, headers: dict | None = None):  # fmt: skip
        """The upstream's stream as it comes, with the `gistify` report added at its end (sse.Tail); its first
        byte and its usage measure the upstream's prefill. A broken upstream ends it (the status is already sent).

        With `sent` (a chat request offered gistify_retrieve), the events are held until the answer shows what it
        is: text, or another tool, and they are relayed from then on; a call of gistify_retrieve (and only it) is
        read to its end, answered from the original, and the stream of the request asked again is relayed in its
        place, so the client sees only the final answer."""
        first = None

        def on_usage(data: dict) -> None:
            n, seconds = prefill_of(data)
            if n and first is not None:  # the first round only: later rounds re-read a cached prefix
                tps = self.speeds.observe(str(model), n, seconds or first - t_sent)
                if tps:
                    self.metrics.prefill_tps.labels(str(model)).set(tps)

        tail = Tail(kind, report.as_dict, on_usage, dumps)
        rounds = 0
        try:
            while True:
                held, message, state = [], {}, None if sent is not None else "relay"
                async for event in events(upstream.aiter_raw()):
                    if first is None and rounds == 0:
                        first = time.perf_counter()
                    if state == "relay":
                        yield tail.event(event)
                        continue
                    held.append(event)
                    delta = chat_delta(data_of(event)[1])
                    accumulate(message, delta)
                    calls = message.get("tool_calls") or []
                    if state is None and calls and calls[0]["function"]["name"]:
                        state = "retrieve" if calls[0]["function"]["name"] == retrieve.NAME else "relay"
                    elif state is None and delta.get("content"):
                        state = "relay"
                    if state == "relay" or (state == "retrieve" and len(calls) > 1 and
                                            calls[-1]["function"]["name"] not in ("", retrieve.NAME)):  # fmt: skip
                        state = "relay"  # text, or the client's own tools: the client gets it all, as it came
                        yield b"".join(tail.event(e) for e in held)
                        held = []
                await upstream.aclose()
                if state != "retrieve" or rounds >= self.settings.retrieve_rounds:
                    break
                data = {"choices": [{"message": {"role": "assistant", **message}}]}
                nxt, _, n = retrieve.follow_up(kind, sent, data, report.originals)
                if nxt is None:
                    break
                report.retrieved += n
                self.stats.retrieved(n)
                self.metrics.retrieve_calls.inc(n)
                again = await self._send("POST", PATHS[kind], headers, dumps(nxt))
                if again.status_code != 200:
                    body = await self._read(again)
                    log.warning("the upstream answered %d after a gistify_retrieve call: %r", again.status_code,
                                body[:200])  # fmt: skip
                    break
                upstream, sent, rounds = again, nxt, rounds + 1
            if held:
                yield b"".join(tail.event(e) for e in held)
            yield tail.end()
        except (httpx.HTTPError, ProxyError) as e:
            self.metrics.errors.labels("upstream_unreachable").inc()
            log.warning("upstream stream broke off: %s", type(e).__name__)

    async def _relay(self, upstream: httpx.Response):
        """The upstream's stream as it comes; a broken upstream ends it (the status is already sent)."""
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        except httpx.HTTPError as e:
            self.metrics.errors.labels("upstream_unreachable").inc()
            log.warning("upstream stream broke off: %s", type(e).__name__)

    async def passthrough(self, request: Request) -> Response:
        """Any other /v1 request (GET /v1/models and the rest): forwarded unchanged, answered unchanged."""
        own_key = self._check_key(request)
        content = await self._read_body(request) if request.method in ("POST", "PUT", "PATCH") else None
        headers = self._upstream_headers(request, own_key)
        if "content-type" in request.headers:
            headers["content-type"] = request.headers["content-type"]
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        upstream = await self._send(request.method, path, headers, content)
        if upstream.status_code >= 400:
            self.metrics.errors.labels("upstream_error").inc()
        return StreamingResponse(
            self._relay(upstream),
            status_code=upstream.status_code,
            headers=self._copy_headers(upstream),
            background=BackgroundTask(upstream.aclose),
        )


def create_app(settings: Settings, scorer: Any = None, http_client: httpx.AsyncClient | None = None) -> Starlette:
    """The proxy as an ASGI app. `scorer` (a loaded gistify.Scorer) and `http_client` may be given, e.g. to
    share one scorer between apps or to watch what goes upstream; otherwise they are made at start."""
    proxy = Proxy(settings, scorer, http_client)

    def endpoint(name: str, handler, api: str = "openai"):
        async def run(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                response = await handler(request)
            except ProxyError as e:
                proxy.metrics.errors.labels(e.kind).inc()
                response = e.response(api)
            except Exception as e:  # a bug: one line in the log, OpenAI's format to the client
                log.exception("internal error on %s %s", request.method, request.url.path)
                proxy.metrics.errors.labels("internal").inc()
                response = ProxyError(500, f"internal error ({type(e).__name__})", "internal", "server_error").response(
                    api
                )
            proxy.metrics.requests.labels(name, str(response.status_code)).inc()
            report = getattr(request.state, "report", None)
            log.info(
                "%s %s %d%s %.0f ms",
                request.method,
                request.url.path,
                response.status_code,
                f" tokens {report.tokens_in}->{report.tokens_out}" if report else "",
                (time.perf_counter() - t0) * 1000,
            )
            return response

        return run

    def forward(kind: str):
        async def handler(request: Request) -> Response:
            return await proxy.compress_and_forward(request, kind)

        return handler

    async def healthz(request: Request) -> Response:
        ready = proxy.compressor is not None
        return JSONResponse({"status": "ok" if ready else "starting"}, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        proxy._check_key(request)
        return Response(proxy.metrics.render(), media_type=proxy.metrics.content_type)

    async def stats(request: Request) -> Response:
        proxy._check_key(request)
        data = proxy.stats.as_dict()
        if request.query_params.get("format") == "table":
            return PlainTextResponse(table(data) + "\n")
        return JSONResponse(data)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await proxy.start()
        try:
            yield
        finally:
            await proxy.stop()

    routes = [
        Route("/v1/chat/completions", endpoint("chat", forward("chat")), methods=["POST"]),
        Route("/v1/completions", endpoint("completions", forward("completion")), methods=["POST"]),
        Route("/v1/responses", endpoint("responses", forward("responses")), methods=["POST"]),
        Route("/v1/messages", endpoint("messages", forward("messages"), "anthropic"), methods=["POST"]),
        Route("/v1/{rest:path}", endpoint("passthrough", proxy.passthrough), methods=["GET", "POST", "DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", endpoint("metrics", metrics), methods=["GET"]),
        Route("/stats", endpoint("stats", stats), methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.proxy = proxy
    return app
