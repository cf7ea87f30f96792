"""`gistify serve`: an OpenAI-compatible proxy that compresses long message contents before the upstream.

Put it between an application and its model server: it forwards `POST /v1/chat/completions`,
`POST /v1/completions` and every other `/v1` request, compresses tool results and long contents for the
last user message's question (`policy`), keeps what it sent deterministic so that the upstream's prompt
cache keeps hitting, checks each compression with a risk report (`fidelity`) and says what it did in
headers, in the response body and in `/metrics`. Needs the `serve` extra: `pip install 'gistify[serve]'`.

settings.py  the options (argparse only, so `gistify --help` stays light)
server.py    `gistify serve`: loads the scorer, then runs the app under uvicorn
app.py       the ASGI app: forwarding, errors in OpenAI's format, headers, the `gistify` object in bodies
policy.py    what is compressed, the content-hash cache, the fidelity fallback
gate.py      the break-even gate: compress only when the tokens saved pay for the compressor's time
fidelity.py  the risk report: numbers, negations, identifiers and names the output lost
metrics.py   Prometheus counters and histograms, one registry per app
upstream.py  llama.cpp's OpenAI-compatible server (the xllamacpp wheel) serving the embedded SmolLM2
"""
