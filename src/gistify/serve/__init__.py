"""`gistify serve`: an OpenAI- and Anthropic-compatible proxy that compresses long contents before the upstream.

Put it between an application and its model server: it compresses the contents of `POST /v1/chat/completions`,
`/v1/completions`, `/v1/responses` and Anthropic's `/v1/messages` (tool results, JSON included, and long
contents, for the last user message's question) and forwards every other `/v1` request unchanged. What it sent
is deterministic and kept in a store that replicas can share (Redis), so the upstream's prompt cache keeps
hitting; each compression is checked with the library's risk report; a break-even gate that measures the
upstream's prefill speed decides whether compressing pays; the model may ask for what was dropped
(`gistify_retrieve`, answered by the proxy). Headers, the response body (or the stream's end), `/metrics` and
`/stats` say what was done. Needs the `serve` extra: `pip install 'gistify[serve]'`.

settings.py  the options (argparse only, so `gistify --help` stays light)
server.py    `gistify serve`: loads the scorer, then runs the app under uvicorn; `gistify serve stats`
app.py       the ASGI app: forwarding, errors in OpenAI's (or Anthropic's) format, headers, the `gistify` report
plans.py     where the contents are in each API's requests, and the request sent once they are decided
policy.py    what is compressed and how (prose, JSON), the fidelity guard, the decision kept in the store
gate.py      the break-even gate, with the upstream's measured prefill speed and the compressor's measured cost
store.py     where decisions are kept: in memory, or in Redis shared by replicas (degrades to memory)
retrieve.py  handles on compressed contents and the gistify_retrieve tool the proxy answers itself
sse.py       streams: events read as they come, the report added at their end
stats.py     the savings since start: GET /stats, `gistify serve stats`
metrics.py   Prometheus counters and histograms, one registry per app
upstream.py  llama.cpp's OpenAI-compatible server (the xllamacpp wheel) serving the embedded SmolLM2
"""
