"""LLMLingua / LongLLMLingua worker (no module beside it may be named llmlingua: this folder is on its path).
Runs INSIDE the llmlingua environment (llmlingua 0.2.2, transformers 4.44), never imports gistify, and talks
JSON lines on stdin/stdout:

    -> {"context": str, "question": str, "rate": float, "mode": "llmlingua" | "longllmlingua"}
    <- {"text": str, "seconds": float}            (or {"error": str})

The first line it writes is {"ready": true, "load_s": ...} once the scorer is loaded.
"""

import json
import sys
import time


def main(model_dir: str) -> None:
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    from llmlingua import PromptCompressor

    t0 = time.perf_counter()
    compressor = PromptCompressor(model_name=model_dir, device_map="cpu")
    print(json.dumps({"ready": True, "load_s": time.perf_counter() - t0}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            t = time.perf_counter()
            if req["mode"] == "longllmlingua":
                # LongLLMLingua ranks and compresses documents: the context's paragraphs. Settings of the
                # LLMLingua README's LongLLMLingua example.
                docs = [p for p in req["context"].split("\n") if p.strip()]
                out = compressor.compress_prompt(
                    docs,
                    question=req["question"],
                    rate=req["rate"],
                    rank_method="longllmlingua",
                    condition_in_question="after_condition",
                    reorder_context="sort",
                    dynamic_context_compression_ratio=0.3,
                    condition_compare=True,
                    context_budget="+100",
                    concate_question=False,
                )
            else:
                out = compressor.compress_prompt(
                    [req["context"]], question=req["question"], rate=req["rate"], concate_question=False
                )
            reply = {"text": out["compressed_prompt"], "seconds": time.perf_counter() - t}
        except Exception as e:  # report, keep serving
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
