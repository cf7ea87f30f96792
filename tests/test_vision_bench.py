"""The visual-token benchmark's own arithmetic: the FLOPs counter and the checks the report computes."""

from __future__ import annotations

import pytest

from gistify_bench.benches.flops import VICUNA_7B, Decoder, llava_table
from gistify_bench.eval.report.vision import accuracy_tables, checks


def test_flops_counter_matches_a_hand_count():
    tiny = Decoder(layers=2, width=8, ffn=16, heads=2, kv_heads=1, vocab=10)
    n = 5
    per_layer = 2 * n * 8 * (8 + 4 + 4 + 8) + 4 * n * n * 8 + 6 * n * 8 * 16  # q, k, v, o; scores; gated MLP
    assert tiny.prefill_flops(n) == 2 * per_layer + 2 * n * 8 * 10


def test_llava_7b_prefill_is_about_2_params_per_token():
    # Vicuna-7B has 6.7e9 parameters: a prefill of 636 tokens is close to 2 x 6.7e9 x 636 = 8.5e12
    assert VICUNA_7B.prefill_flops(636) / 1e12 == pytest.approx(8.5, rel=0.05)
    for row in llava_table():
        assert row["visual_tokens"] == 58 and row["reduced_tflops"] < row["full_tflops"] / 4


def _records(recover: float, random: float, full: float = 0.8) -> list[dict]:
    base = {"task": "t", "n": 10, "tokens": 20.0}
    return [
        {**base, "method": "none", "keep": 1.0, "accuracy": full, "tokens": 196.0},
        {**base, "method": "recover", "keep": 0.1, "accuracy": recover},
        {**base, "method": "random", "keep": 0.1, "accuracy": random},
        {**base, "method": "recover", "keep": None, "accuracy": 0.7, "tokens": 50.0},
    ]


def test_checks_pass_and_fail_on_the_numbers():
    good = "\n".join(checks(_records(recover=0.75, random=0.5), None))
    assert "keeps 94%" in good and "PASS (target 90%)" in good and "vs random at keep 0.1: 0.750 vs 0.500: PASS" in good
    bad = "\n".join(checks(_records(recover=0.5, random=0.6), None))
    assert "FAIL (target 90%)" in bad and "vs random at keep 0.1: 0.500 vs 0.600: FAIL" in bad


def test_accuracy_table_has_the_dynamic_budget_column():
    table = "\n".join(accuracy_tables(_records(0.75, 0.5)))
    assert "| recover | 0.750 | 0.700 (50.0) |" in table and "| random | 0.500 |  |" in table
