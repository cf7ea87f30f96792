"""kvpress worker. Runs INSIDE the kvpress environment (kvpress 0.5.5, transformers 5.2), never imports gistify,
and talks JSON lines on stdin/stdout, in token ids (the harness tokenises and decodes with the reader's tokenizer):

    -> {"op": "answer", "prefix": [int], "suffix": [int], "press": str, "compression_ratio": float,
        "max_new_tokens": int, "stops": [int], "stop_at_newline": bool}
    <- {"ids": [int], "kv_prefix": int, "kv_kept": int, "prefill_s": float, "decode_s": float}
    -> {"op": "nll", "prefix": [int], "continuation": [int], "press": str, "compression_ratio": float}
    <- {"nll": float, "kv_prefix": int, "kv_kept": int, "forward_s": float}
                                                   (or {"error": str})

The first line it writes is {"ready": true, "load_s": ...} once the model is loaded. `press` is a kvpress class
name. The press prunes the cache during the prefill of `prefix` only (kvpress compresses in the first forward
on a cache and never after), so the suffix (the question) and what follows are read in full against the pruned
cache. kv_kept is the prefix's positions left in the cache, the same in every layer (checked).

The harness starts it with `python -I`: a script's own folder comes first on sys.path, where a module named like
a package of this environment would shadow it; isolated mode leaves that folder off.
"""

import json
import sys
import time


def prefill(model, prefix: list[int], press):
    """Read `prefix` into a fresh cache under `press`: (cache, logits of the last position, kept positions)."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache()
    with press(model):
        out = model(input_ids=torch.tensor([prefix]), past_key_values=cache, use_cache=True, logits_to_keep=1)
    kept = {layer.keys.shape[-2] for layer in cache.layers}
    if len(kept) != 1:
        raise RuntimeError(f"the press left layers of different lengths: {sorted(kept)}")
    return cache, out.logits[0, -1], kept.pop()


def extend(model, cache, ids: list[int], start: int, logits_to_keep: int = 0):
    """Read `ids` after the pruned cache at their true positions (`start` onward), as kvpress's pipeline does:
    the cache is shorter than the text, so the positions cannot come from its length."""
    import torch

    positions = torch.arange(start, start + len(ids)).unsqueeze(0)
    return model(
        input_ids=torch.tensor([ids]),
        past_key_values=cache,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=logits_to_keep,
    )


def answer(model, tokenizer, press, req: dict) -> dict:
    """Greedy decoding as the harness's Reader.answer does, after the pressed prefix and the unpressed suffix."""
    prefix, suffix = req["prefix"], req["suffix"]
    stops = set(req["stops"])
    t0 = time.perf_counter()
    cache, _, kept = prefill(model, prefix, press)
    out = extend(model, cache, suffix, len(prefix), logits_to_keep=1)
    prefill_s = time.perf_counter() - t0
    position, nxt, new = len(prefix) + len(suffix), int(out.logits[0, -1].argmax()), []
    t1 = time.perf_counter()
    while nxt not in stops and len(new) < req["max_new_tokens"]:
        if req["stop_at_newline"] and new and "\n" in tokenizer.decode([nxt]):
            break
        new.append(nxt)
        out = extend(model, cache, [nxt], position + len(new) - 1)
        nxt = int(out.logits[0, -1].argmax())
    return {
        "ids": new,
        "kv_prefix": len(prefix),
        "kv_kept": kept,
        "prefill_s": prefill_s,
        "decode_s": time.perf_counter() - t1,
    }


def nll(model, press, req: dict) -> dict:
    """Mean NLL (nats/token) of the continuation read against the pressed prefix."""
    import torch

    prefix, cont = req["prefix"], req["continuation"]
    t0 = time.perf_counter()
    cache, last, kept = prefill(model, prefix, press)
    logits = [last.unsqueeze(0)]  # the prefix's last position predicts the continuation's first token
    if len(cont) > 1:
        logits.append(extend(model, cache, cont[:-1], len(prefix)).logits[0])
    seconds = time.perf_counter() - t0
    value = torch.nn.functional.cross_entropy(torch.cat(logits).float(), torch.tensor(cont))
    return {"nll": float(value), "kv_prefix": len(prefix), "kv_kept": kept, "forward_s": seconds}


def main(model_dir: str) -> None:
    import kvpress
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    print(json.dumps({"ready": True, "load_s": time.perf_counter() - t0}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            press = getattr(kvpress, req["press"])(compression_ratio=req["compression_ratio"])
            with torch.inference_mode():
                reply = answer(model, tokenizer, press, req) if req["op"] == "answer" else nll(model, press, req)
        except Exception as e:  # report, keep serving
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
