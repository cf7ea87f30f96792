"""Budget, registry, protection patterns, token counters, graph algorithms, scorer windows."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gistify
from gistify.budget import Budget
from gistify.graph import affinity_graph, personalized_pagerank
from gistify.text.protect import missing, protected_ranges
from gistify.text.tokens import openai


def test_budget_validation_and_target():
    assert Budget(keep=0.3).target(10) == 3 and Budget(keep=0.25).target(10) == 3
    assert Budget(keep=1.0).target(7) == 7 and Budget(keep=0.001).target(10) == 1
    assert Budget(tokens=5).target(3) == 3 and Budget(tokens=5).target(30) == 5
    for bad in [
        dict(),
        dict(keep=0.5, tokens=2),
        dict(keep=0),
        dict(keep=1.01),
        dict(keep=float("nan")),
        dict(tokens=0),
        dict(tokens=2.5),
        dict(keep=True),
    ]:
        with pytest.raises(ValueError):
            Budget(**bad)


def test_registry_lists_every_method_with_a_description():
    listed = gistify.methods()
    assert {"reinforce", "selfinfo", "random", "truncate"} <= set(listed)
    assert all(desc and "\n" not in desc for desc in listed.values())


def test_import_is_light():
    code = "import sys, gistify; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_protect_patterns():
    text = "Take 2.5 mg, not 25; call max_retries or getValue() at 10:30 on 3rd May. It isn't x2."

    def found(**kw):
        return [text[s:e] for s, e in protected_ranges(text, **kw)]

    assert found(numbers=True) == ["2.5", "25", "10:30", "3rd"]
    assert found(negations=True) == ["not 25", "isn't x2"]  # with what they negate, up to the punctuation
    assert set(found(identifiers=True)) == {"max_retries", "getValue()", "x2"}
    assert found(protect=[" mg, "]) == ["mg,"]  # trimmed of whitespace
    assert protected_ranges(text, protect=["   "]) == []
    with pytest.raises(ValueError, match="not inside the text"):
        protected_ranges(text, protect=[(5, 500)])
    assert missing([(0, 4), (5, 8)], [(0, 4), (6, 9)]) == [(5, 8)]


def test_openai_counters_offline():
    enc = openai("cl100k_base")
    assert enc.count("hello world") == 2
    text = "naïve café, 東京 👍 done"
    starts = enc.starts(text)
    assert len(starts) == enc.count(text) and starts[0] == 0 and np.all(np.diff(starts) >= 0)
    assert openai("o200k_base").count("hello world") == 2
    with pytest.raises(ValueError, match="unknown OpenAI encoding"):
        openai("p50k_base")


def test_affinity_graph_is_symmetric_knn_and_blockwise_exact():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(50, 8), dim=-1)
    a = affinity_graph(z, k=4, sigma=10.0).to_dense()
    assert torch.allclose(a, a.T) and torch.all(a.diag() == 0) and torch.all(a >= 0)
    # brute force: each row's 4 best by max(0, cos) * exp(-|i-j|/sigma), then (A + Aᵀ)/2
    w = (z @ z.T).clamp_min(0) * torch.exp(-(torch.arange(50.0)[:, None] - torch.arange(50.0)).abs() / 10)
    w.fill_diagonal_(-1)
    v, j = w.topk(4, dim=1)
    ref = torch.zeros(50, 50).scatter_(1, j, v.clamp_min(0))
    torch.testing.assert_close(a, (ref + ref.T) / 2)
    small_blocks = affinity_graph(z, k=4, sigma=10.0, max_block_elems=120).to_dense()
    torch.testing.assert_close(small_blocks, a)


def test_personalized_pagerank_matches_dense_power_iteration():
    torch.manual_seed(1)
    z = F.normalize(torch.randn(30, 6), dim=-1)
    a = affinity_graph(z, k=5, sigma=None)
    prior = torch.softmax(torch.randn(30), 0)
    s = personalized_pagerank(a, prior, alpha=0.85, iterations=200, tol=0)
    dense = a.to_dense()
    p = dense / (dense.sum(1, keepdim=True) + 1e-12)
    ref = prior.clone()
    for _ in range(200):
        ref = 0.85 * p.T @ ref + 0.15 * prior
    torch.testing.assert_close(s, ref)
    # relevance spreads to the neighbours of the prior's peak
    peak = torch.zeros(30)
    peak[3] = 1
    spread = personalized_pagerank(a, peak)
    neighbours = dense[3] > 0
    others = ~neighbours
    others[3] = False
    assert spread[neighbours].mean() > 2 * spread[others].mean()


def test_scorer_windows_match_one_full_pass(tiny_model, tiny_tokenizer):
    from conftest import prose
    from gistify import Scorer

    text = prose()[:1500]
    full = Scorer(tiny_model, tiny_tokenizer, window=10_000).stats(text)
    windowed = Scorer(tiny_model, tiny_tokenizer, window=64, context=16).stats(text)
    n = len(full.starts)
    assert n > 200 and windowed.hidden.shape == full.hidden.shape == (n, 32)
    np.testing.assert_array_equal(windowed.starts, full.starts)
    # the first window is read exactly as in the full pass
    np.testing.assert_allclose(windowed.self_info[:64], full.self_info[:64], atol=1e-4)
    torch.testing.assert_close(windowed.hidden[:64], full.hidden[:64], atol=1e-4, rtol=1e-4)
    # later windows see only 16 tokens of context: close to, not equal to, the full pass
    assert np.isfinite(windowed.self_info).all() and (windowed.self_info >= 0).all()
    ids = torch.tensor([[tiny_tokenizer.bos_token_id] + tiny_tokenizer(text, add_special_tokens=False).input_ids])
    logp = torch.log_softmax(tiny_model(ids).logits[0], -1)
    ref = -logp[torch.arange(n), ids[0, 1:]]
    np.testing.assert_allclose(full.self_info, ref.detach().numpy(), atol=1e-4)
