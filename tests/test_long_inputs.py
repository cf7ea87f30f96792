"""Long inputs (issue 14, item 8): the banded affinity graph equals the all-pairs one, grows linearly, and every
stage of a compression reports progress."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F

from conftest import prose
from gistify.graph import affinity_graph, band, personalized_pagerank

pytestmark = pytest.mark.usefixtures("one_thread")


def dense(a):
    return a.to_dense()


def test_band_bound():
    w = band(4.0)
    assert w == 56 and math.exp(-(w + 1) / 4.0) < 1e-6 <= math.exp(-(w - 1) / 4.0)


@pytest.mark.parametrize("n,d", [(300, 16), (1500, 64)])
def test_banded_graph_equals_all_pairs(n, d):
    torch.manual_seed(n)
    z = F.normalize(torch.randn(n, d), dim=-1)
    banded, full = affinity_graph(z, 10, 4.0), affinity_graph(z, 10, 4.0, banded=False)
    assert torch.equal(banded.indices(), full.indices()) and torch.allclose(banded.values(), full.values())
    far = banded.indices()[:, (banded.indices()[0] - banded.indices()[1]).abs() > band(4.0)]
    assert far.shape[1] == 0  # every neighbour lies in the band


def test_rows_without_enough_in_band_neighbours_are_searched_over_all_pairs():
    """Orthogonal neighbours in the band (cos 0) and an exact copy 128 tokens away: all-pairs links the copies
    (weight exp(-32) > 0); the banded graph must too, through its fallback rows."""
    n, d = 400, 128
    z = torch.eye(d)[torch.arange(n) % d]
    banded, full = affinity_graph(z, 3, 4.0), affinity_graph(z, 3, 4.0, banded=False)
    assert torch.equal(dense(banded), dense(full))
    assert dense(full)[0, 128] > 0


def test_no_locality_keeps_the_all_pairs_search():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(500, 8), dim=-1)
    z[499] = z[0]  # the far copy is the strongest neighbour without a locality factor
    a = dense(affinity_graph(z, 2, None))
    assert a[0, 499] == pytest.approx(1.0, abs=1e-5)
    grid = torch.arange(500, dtype=torch.float32) * (1 + 1j)  # explicit positions (vision): all pairs as well
    assert torch.equal(
        dense(affinity_graph(z, 2, 4.0, positions=grid.abs())),
        dense(affinity_graph(z, 2, 4.0, banded=False, positions=grid.abs())),
    )


def test_banded_graph_time_is_linear():
    torch.manual_seed(0)
    times = {}
    for n in (4000, 32000):
        z = F.normalize(torch.randn(n, 32), dim=-1)
        t = time.perf_counter()
        a = affinity_graph(z, 10, 4.0)
        personalized_pagerank(a, torch.full((n,), 1.0 / n))
        times[n] = time.perf_counter() - t
    assert times[32000] < 20 * times[4000] + 1.0  # 8x the tokens; all pairs would be 64x


def test_progress_through_every_stage(monkeypatch, tiny_model, tiny_tokenizer):
    import gistify.graph
    import gistify.progress
    import gistify.text.pipeline
    from gistify import Scorer

    seen = []

    @contextmanager
    def fake(total, description, enabled, unit=""):
        if enabled:
            seen.append(description)
        yield lambda: None

    for module in (gistify.progress, gistify.graph, gistify.text.pipeline):
        monkeypatch.setattr(module, "progress_bar", fake)
    scorer = Scorer(tiny_model, tiny_tokenizer, window=256, context=16)
    gistify.compress(
        prose()[:4000], "What do they eat?", keep=0.2, method="reinforce", scorer=scorer, progress=True, fallback="off"
    )
    assert seen == ["preparing", "scoring", "graph", "propagation", "selecting"]
