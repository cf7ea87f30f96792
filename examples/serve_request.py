"""A real request through `gistify serve`: a long tool result (examples/albedo.txt, about 3,500 tokens) and a
question, with the `openai` client. Prints what the proxy did (its X-Gistify-* headers, and for the tool result
the gate's figures and the reason for its decision) and the model's answer.

    python examples/serve_request.py [--url http://127.0.0.1:8080/v1] [--wait 600]

It waits for the proxy to be ready first (the README starts the upstream and the proxy in the background).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import httpx
from openai import OpenAI

HERE = Path(__file__).parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080/v1", help="the proxy's OpenAI base URL")
    p.add_argument("--wait", type=float, default=600, help="seconds to wait for the proxy to be ready")
    args = p.parse_args()
    root = args.url.rstrip("/").removesuffix("/v1")
    deadline = time.monotonic() + args.wait
    while True:
        try:
            if httpx.get(root + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the proxy at {root} is not ready after {args.wait:.0f} s")
        time.sleep(1)

    document = (HERE / "albedo.txt").read_text(encoding="utf-8")
    messages = [
        {"role": "system", "content": "Answer in one short sentence."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "read_article", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": document},
        {"role": "user", "content": "What is the albedo of fresh snow?"},
    ]  # fmt: skip
    client = OpenAI(base_url=args.url, api_key="sk-any", max_retries=0, timeout=900)
    t0 = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=messages, max_tokens=24, temperature=0
    )
    seconds = time.perf_counter() - t0
    r = raw.parse()
    for name in ("tokens-in", "tokens-out", "method", "compressed", "fallbacks", "added-ms"):
        print(f"x-gistify-{name}: {raw.headers.get('x-gistify-' + name)}")
    report = (r.model_extra or {}).get("gistify", {})
    tool = next((c for c in report.get("contents", []) if c["at"] == "messages[2]"), {})
    print("tool result:", json.dumps({k: tool.get(k) for k in ("action", "tokens_in", "tokens_out", "risk")}))
    print("gate:", json.dumps(tool.get("gate")))
    print(f"answer ({seconds:.1f} s): {r.choices[0].message.content!r}")


if __name__ == "__main__":
    main()
