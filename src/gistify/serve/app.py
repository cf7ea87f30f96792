"""The ASGI app: an OpenAI-compatible proxy that compresses long message contents on the way upstream.

Starlette routes the requests, httpx (one pooled AsyncClient) talks to the upstream, prometheus_client
keeps the counts. A request's body is parsed, counted and compressed in a worker thread (`policy`), so the
event loop keeps serving other requests while the scorer works; the upstream's answer is passed back as it
comes, streamed or not, with headers that say what was done (X-Gistify-*) and, in a JSON body, a `gistify`
object next to `usage`.

Errors are answered in OpenAI's format, {"error": {"message", "type", "param", "code"}}: 400 for a body that
is not JSON or lacks a field, 413 over --max-body, 401 without the key when --api-key is set, 502 when the
upstream cannot be reached, 504 when it does not answer in time. The upstream's own errors pass through
with their status and body. The client's Authorization header is forwarded (unless it carried the proxy's
own key, or --upstream-api-key replaces it) and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gistify.serve.gate import Gate
from gistify.serve.metrics import Metrics
from gistify.serve.policy import Compressor, Outcome, Report, plan_chat, plan_completion
from gistify.serve.settings import Settings

log = logging.getLogger("gistify.serve")
PLANNERS = {"chat": plan_chat, "completion": plan_completion}

# request headers worth forwarding besides Authorization; everything else (cookies, hop-by-hop) stays here
_FORWARD = ("accept", "user-agent", "openai-organization", "openai-project", "openai-beta", "x-request-id")
# response headers not to copy back: hop-by-hop ones, and those Starlette sets for the body it sends
_DROP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "date", "server"}
)


class ProxyError(Exception):
    """An error answered by the proxy itself, in OpenAI's format."""

    def __init__(self, status: int, message: str, kind: str, type_: str = "invalid_request_error", param=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.type, self.param = status, message, kind, type_, param

    def response(self) -> JSONResponse:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.kind}
        return JSONResponse({"error": error}, status_code=self.status)


def dumps(body: Any) -> bytes:
    """The one serialisation of a changed request: compact, UTF-8, keys in the client's order. The same
    request therefore always gives the same bytes upstream."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _validate(kind: str, body: Any) -> None:
    if not isinstance(body, dict):
        raise ProxyError(400, "the request body must be a JSON object", "bad_request")
    if not isinstance(body.get("model"), str):
        raise ProxyError(400, "missing required field 'model' (a string)", "bad_request", param="model")
    if kind == "chat":
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise ProxyError(400, "missing required field 'messages' (a non-empty list)", "bad_request", "messages")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise ProxyError(400, f"messages[{i}] must be an object with a 'role'", "bad_request", "messages")
    else:
        p = body.get("prompt")
        ok = isinstance(p, str) or (isinstance(p, list) and p and all(isinstance(x, str | int | list) for x in p))
        if not ok:
            raise ProxyError(400, "missing required field 'prompt' (a string or a list)", "bad_request", "prompt")


class Proxy:
    """The proxy's state: settings, the compressor, the upstream client, the metrics, the worker threads."""

    def __init__(self, settings: Settings, scorer: Any = None, http_client: httpx.AsyncClient | None = None):
        self.settings = settings
        self.metrics = Metrics()
        self.scorer = scorer
        self.client = http_client
        self._own_client = http_client is None
        self.pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="gistify-serve")
        self.compress_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gistify-compress")
        self.compressor: Compressor | None = None
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
        self.compressor = Compressor(s, self.scorer, self.metrics)
        cost = s.compress_ms_per_1k
        if cost is None:
            cost = await loop.run_in_executor(self.compress_pool, self.compressor.measure, 256)
            log.info("compressor cost measured: %.0f ms per 1k tokens (%s)", cost, s.method)
        self.compressor.gate = Gate(s.price_per_mtok, s.prefill_tps, s.latency_price, cost, enabled=s.gate)
        for name, value in (
            ("price_per_mtok", s.price_per_mtok),
            ("prefill_tps", s.prefill_tps),
            ("latency_price", s.latency_price),
            ("compress_ms_per_1k", cost),
        ):
            self.metrics.gate_setting.labels(name).set(value)
        if self.client is None:
            self.client = httpx.AsyncClient(
                timeout=httpx.Timeout(s.timeout, connect=s.connect_timeout),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )

    async def stop(self) -> None:
        if self._own_client and self.client is not None:
            await self.client.aclose()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.compress_pool.shutdown(wait=False, cancel_futures=True)

    # -- helpers -------------------------------------------------------------------------------------------

    def _check_key(self, request: Request) -> bool:
        """Raise 401 unless the client has the key; True when Authorization carried the proxy's own key."""
        key = self.settings.api_key
        if not key:
            return False
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        given = request.headers.get("x-gistify-key") or bearer
        if not given or not hmac.compare_digest(given.encode(), key.encode()):
            raise ProxyError(401, "invalid or missing API key for this proxy", "unauthorized", "authentication_error")
        return bool(bearer) and hmac.compare_digest(bearer.encode(), key.encode())

    def _upstream_headers(self, request: Request, own_key: bool) -> dict[str, str]:
        headers = {k: v for k in _FORWARD if (v := request.headers.get(k)) is not None}
        headers["accept-encoding"] = "identity"  # pass the bytes back as they come, streamed or not
        if self.settings.upstream_api_key:
            headers["authorization"] = f"Bearer {self.settings.upstream_api_key}"
        elif not own_key and "authorization" in request.headers:
            headers["authorization"] = request.headers["authorization"]
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
            raise ProxyError(400, f"the request body is not valid JSON: {e}", "bad_request") from None
        except RecursionError:
            raise ProxyError(400, "the request body is JSON nested too deeply to read", "bad_request") from None
        _validate(kind, body)
        todo: dict[str, str | None] = {}

        def look(text: str, question: str | None) -> Outcome:
            out = self.compressor.quick(text)
            if out is None:
                todo.setdefault(text, question)
                return Outcome(text, 0, 0, "pending")
            return out

        new, report = PLANNERS[kind](body, self.compressor, look)
        return body, new, report, todo

    async def _prepare(self, kind: str, raw: bytes) -> tuple[bytes, Report, bool]:
        """The bytes to send upstream, the report, and whether the client asked for a stream.

        Parsing and counting run in the worker threads; compressions run one at a time in their own thread,
        so that requests with nothing to compress never queue behind them."""
        loop = asyncio.get_running_loop()
        body, new, report, todo = await loop.run_in_executor(self.pool, self._parse, kind, raw)
        if todo:
            done = {text: await self._compress(text, question) for text, question in todo.items()}

            def resolve(text: str, question: str | None) -> Outcome:
                return done.get(text) or self.compressor.content(text, question)

            new, report = await loop.run_in_executor(self.pool, PLANNERS[kind], body, self.compressor, resolve)
        # unchanged: the client's own bytes; changed: one deterministic serialisation
        return (raw if new is body else dumps(new)), report, bool(body.get("stream"))

    async def _compress(self, text: str, question: str | None) -> Outcome:
        """One content's outcome from the compression thread; a request whose content is being compressed
        for another request right now waits for that result instead of queueing behind other compressions."""
        key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
        task = self.inflight.get(key)
        if task is not None:
            return replace(await asyncio.shield(task), cached=True, seconds=0.0)
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(loop.run_in_executor(self.compress_pool, self.compressor.content, text, question))
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

    @staticmethod
    def _copy_headers(upstream: httpx.Response) -> dict[str, str]:
        return {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP}

    # -- endpoints -----------------------------------------------------------------------------------------

    async def compress_and_forward(self, request: Request, kind: str) -> Response:
        t0 = time.perf_counter()
        own_key = self._check_key(request)
        raw = await self._read_body(request)
        content, report, stream = await self._prepare(kind, raw)
        added = time.perf_counter() - t0
        self.metrics.added_seconds.observe(added)
        m = self.metrics
        m.tokens_in.inc(report.tokens_in)
        m.tokens_out.inc(report.tokens_out)
        for c in report.contents:
            m.messages.labels("cached" if c.get("cached") else c["action"]).inc()
        gistify_headers = {
            "X-Gistify-Tokens-In": str(report.tokens_in),
            "X-Gistify-Tokens-Out": str(report.tokens_out),
            "X-Gistify-Method": report.as_dict()["method"],
            "X-Gistify-Compressed": str(report.compressed),
            "X-Gistify-Fallbacks": str(report.fallbacks),
            "X-Gistify-Added-Ms": f"{added * 1000:.1f}",  # reading, counting, compressing: before forwarding
        }
        path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
        headers = self._upstream_headers(request, own_key)
        headers["content-type"] = "application/json"
        upstream = await self._send("POST", path, headers, content)
        request.state.report = report
        if upstream.status_code >= 400:
            m.errors.labels("upstream_error").inc()
        if stream and upstream.status_code == 200:
            return StreamingResponse(
                self._relay(upstream),
                status_code=upstream.status_code,
                headers={**self._copy_headers(upstream), **gistify_headers},
                background=BackgroundTask(upstream.aclose),
            )
        try:
            body = await upstream.aread()
        except httpx.TimeoutException:
            msg = "the upstream did not finish its answer in time"
            raise ProxyError(504, msg, "upstream_timeout", "upstream_error") from None
        except httpx.HTTPError as e:
            raise ProxyError(502, f"the upstream broke off its answer ({type(e).__name__})", "upstream_unreachable",
                             "upstream_error") from None  # fmt: skip
        finally:
            await upstream.aclose()
        if upstream.status_code == 200 and "json" in upstream.headers.get("content-type", ""):
            with contextlib.suppress(ValueError):
                data = json.loads(body)
                if isinstance(data, dict):
                    data["gistify"] = report.as_dict()
                    body = dumps(data)
        return Response(body, status_code=upstream.status_code, headers={**self._copy_headers(upstream),
                        **gistify_headers})  # fmt: skip

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

    def endpoint(name: str, handler):
        async def run(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                response = await handler(request)
            except ProxyError as e:
                proxy.metrics.errors.labels(e.kind).inc()
                response = e.response()
            except Exception as e:  # a bug: one line in the log, OpenAI's format to the client
                log.exception("internal error on %s %s", request.method, request.url.path)
                proxy.metrics.errors.labels("internal").inc()
                response = ProxyError(
                    500, f"internal error ({type(e).__name__})", "internal", "server_error"
                ).response()
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

    async def chat(request: Request) -> Response:
        return await proxy.compress_and_forward(request, "chat")

    async def completions(request: Request) -> Response:
        return await proxy.compress_and_forward(request, "completion")

    async def healthz(request: Request) -> Response:
        ready = proxy.compressor is not None
        return JSONResponse({"status": "ok" if ready else "starting"}, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(proxy.metrics.render(), media_type=proxy.metrics.content_type)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await proxy.start()
        try:
            yield
        finally:
            await proxy.stop()

    routes = [
        Route("/v1/chat/completions", endpoint("chat", chat), methods=["POST"]),
        Route("/v1/completions", endpoint("completions", completions), methods=["POST"]),
        Route("/v1/{rest:path}", endpoint("passthrough", proxy.passthrough), methods=["GET", "POST", "DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.proxy = proxy
    return app
