"""kvpress presses (NVIDIA kvpress 0.5.5) as harness peers, on the reader at the same kept fraction of the KV cache.

A press prunes the reader's KV cache while it reads the context, so its output is a cache, not text. The peer's
compressor therefore passes the context through unchanged and records (context, keep) for the example; its
`.reader` (KVPressReader, which the runner uses in place of the harness's reader) reads the prompt in two parts
in the kvpress worker: everything up to the end of the context under the press, then the rest (the question)
in full against the pruned cache. `tokens_out` counts the KV positions of the context that are kept, and
`compress_s` is 0: the press's cost is inside the reader's prefill time, which is measured on the full context
(a press reduces what the answer attends to, not the prefill).

kvpress 0.5.5 needs transformers >=4.56,<5.3, so it lives in its own environment, `<venv>/peers/kvpress`
(made by scripts/setup_peers.sh), and runs as a worker process (kvpress_worker.py) that loads the reader's own
model directory and exchanges token ids: tokenising and decoding stay with the harness's reader.

This module is not named kvpress.py: the worker's folder is this one, and a kvpress.py here would shadow the
kvpress package for anyone who runs the worker as a plain script (the harness also starts it with `python -I`,
which leaves the script's folder off sys.path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from gistify_bench.eval.peers.lingua import PeerError, WorkerProcess, env_dir
from gistify_bench.eval.runner import Compression, Compressor

PRESSES = {
    "kvpress-expected": "ExpectedAttentionPress",
    "kvpress-snapkv": "SnapKVPress",
    "kvpress-knorm": "KnormPress",
    "kvpress-streaming": "StreamingLLMPress",
    "kvpress-tova": "TOVAPress",
}
WORKER = Path(__file__).with_name("kvpress_worker.py")


def python() -> Path:
    return env_dir() / "kvpress" / "bin" / "python"


def model_dir(reader) -> str:
    """The reader's model as a directory (or hub id) the worker's transformers loads as it is."""
    from gistify import models

    return str(models.EMBEDDED[reader.name].path) if reader.name in models.EMBEDDED else reader.name


class KVPressWorker(WorkerProcess):
    """One worker process per model, serving every press; started on first use."""

    label = "kvpress"
    _shared: dict[str, KVPressWorker] = {}

    def __init__(self, model: str):
        # -I (isolated mode) leaves the script's folder off sys.path, so no module beside it can shadow a package
        super().__init__(python(), ["-I", str(WORKER), model])

    @classmethod
    def shared(cls, model: str) -> KVPressWorker:
        w = cls._shared.get(model)
        if w is None or w.proc.poll() is not None:
            w = cls._shared[model] = cls(model)
        return w


def split_prompt(reader, ids: list[int], message: str, context: str) -> tuple[int, int]:
    """(h, s) such that ids[:h] precede the context (BOS, chat template header), ids[h:s] are the context's and
    ids[s:] follow it, for `ids` = reader.encode(message) of a message that starts with `context`.

    The ids are decoded and re-tokenised with character offsets (checked to give the same ids); a token that
    straddles the context's end goes after it, so the question is never pruned. Raises PeerError where the
    split cannot be found."""
    if not context or not message.startswith(context):
        raise PeerError("the kvpress reader needs a prompt that starts with the example's context")
    text = reader.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    enc = reader.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    start = text.find(message)
    if start < 0 or list(enc["input_ids"]) != list(ids):
        raise PeerError("cannot find the context in the reader's prompt: its tokens do not survive a decode")
    end = start + len(context)
    offsets = enc["offset_mapping"]
    h = next((i for i, (_, e) in enumerate(offsets) if e > start), len(ids))
    s = next((i for i, (b, e) in enumerate(offsets) if b >= end or e > end), len(ids))
    if s <= h:
        raise PeerError("the context has no token of its own in the reader's prompt")
    return h, s


def compression_ratio(prefix: int, kept: int) -> float:
    """kvpress's compression_ratio that leaves `kept` of `prefix` positions: presses keep
    int(prefix * (1 - ratio)), so the ratio is nudged down lest float rounding drop one more."""
    return max(0.0, (prefix - kept) / prefix - 1e-9)


@dataclass
class Example:
    """What the compressor saw for the example being read."""

    context: str
    keep: float


class KVPressReader:
    """The harness reader's interface (name, tokenizer, answer, continuation_nll), read through a press.

    The pressed prefix holds the template header (or BOS) and the context; it keeps header + ceil(keep * context)
    positions, the KV size a text method's prompt has before the question at the same keep (which of them the
    press keeps is its own choice)."""

    def __init__(self, reader, press: str):
        self.reader, self.press = reader, press
        self.name, self.tokenizer = reader.name, reader.tokenizer
        self.example: Example | None = None

    def _read(self, op: str, prefix: list[int], header: int, context: str, **req) -> dict:
        if self.example is None or self.example.context != context:
            raise PeerError("the kvpress reader reads only the context its compressor was just given")
        kept = header + math.ceil(self.example.keep * (len(prefix) - header))
        ratio = compression_ratio(len(prefix), kept)
        reply = KVPressWorker.shared(model_dir(self.reader)).request(
            self.press, op=op, prefix=prefix, press=self.press, compression_ratio=ratio, **req
        )
        if reply["kv_kept"] != kept:  # the press must really leave the budget in the cache
            raise PeerError(f"{self.press} kept {reply['kv_kept']} of {len(prefix)} KV positions, not {kept}")
        return reply

    def answer(self, message: str, max_new_tokens: int = 32, chat: bool = True) -> dict:
        """Reader.answer's result, plus kv_kept (prefix positions left in the cache) and kv_prefix."""
        ids = self.reader.encode(message, chat)
        context = self.example.context if self.example else ""
        h, s = split_prompt(self.reader, ids, message, context)
        stops = {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")} - {None}
        reply = self._read(
            "answer",
            ids[:s],
            h,
            context,
            suffix=ids[s:],
            max_new_tokens=max_new_tokens,
            stops=sorted(stops),
            stop_at_newline=chat and not self.reader.has_chat_template,
        )
        return {
            "text": self.tokenizer.decode(reply["ids"], skip_special_tokens=True).strip(),
            "prompt_tokens": len(ids),
            "prefill_s": reply["prefill_s"],
            "decode_s": reply["decode_s"],
            "kv_kept": reply["kv_kept"],
            "kv_prefix": reply["kv_prefix"],
        }

    def continuation_nll(self, context: str, continuation: str) -> dict:
        """Reader.continuation_nll's result (tokenised the same way) with the context read under the press."""
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        ctx = bos + self.tokenizer(context, add_special_tokens=False).input_ids
        cont = self.tokenizer(continuation, add_special_tokens=False).input_ids
        reply = self._read("nll", ctx, len(bos), context, continuation=cont)
        return {
            "nll": reply["nll"],
            "tokens": len(cont),
            "prompt_tokens": len(ctx) + len(cont),
            "forward_s": reply["forward_s"],
            "kv_kept": reply["kv_kept"],
            "kv_prefix": reply["kv_prefix"],
        }


def compressor(name: str, reader) -> Compressor:
    """The harness compressor for press `name`, with its `.reader`; tokens counted in the reader's tokenizer."""
    if name not in PRESSES:
        raise ValueError(f"unknown kvpress press {name!r}; known: {', '.join(PRESSES)}")
    kv_reader = KVPressReader(reader, PRESSES[name])

    def run(context: str, question: str, keep: float) -> Compression:
        kv_reader.example = Example(context, keep)
        n = len(reader.tokenizer(context, add_special_tokens=False).input_ids)
        return Compression(context, n, math.ceil(keep * n), 0.0)

    def worker_pid() -> int | None:  # the runner reports the worker's peak memory next to the harness's
        w = KVPressWorker._shared.get(model_dir(reader))
        return w.proc.pid if w is not None and w.proc.poll() is None else None

    run.reader = kv_reader
    run.worker_pid = worker_pid
    return run
