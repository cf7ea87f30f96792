"""The reinforcement controller (docs/methods.md §1.2.1): estimator, reward, resumption, shipped weights."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from conftest import prose


def test_policy_step_moves_weight_towards_the_rewarded_feature():
    from gistify_bench.train.controller import ControllerConfig, policy_step

    torch.manual_seed(0)
    features = torch.randn(300, 3)
    good = features[:, 0] > 0  # the reward pays for keeping tokens whose first feature is high

    def reward_of(mask):
        return float(mask[good].float().mean() - mask[~good].float().mean()), {}

    theta = torch.nn.Parameter(torch.tensor([0.0, 0.0, 0.0, 0.0]))
    opt = torch.optim.Adam([theta], lr=0.05)
    s, state, rng = ControllerConfig(samples=4), {"baseline": None}, random.Random(0)
    for _ in range(40):
        policy_step(theta, opt, features, reward_of, s, state, rng)
    b1, b2, b3, _ = theta.detach().tolist()
    assert b1 > 1.0 and b1 > 3 * max(abs(b2), abs(b3))


@pytest.fixture()
def tiny_input(tiny_scorer):
    from gistify_bench.train.controller import make_input

    text = prose()[:1500]
    return make_input(tiny_scorer, text, "The aardwolf eats ___ termites a night.", "200,000")


def test_reward_of_the_full_context_is_the_uncompressed_read(tiny_scorer, tiny_input):
    from gistify_bench.train.controller import ControllerConfig, reward

    s = ControllerConfig()
    n = len(tiny_input.context_ids)
    assert tiny_input.features.shape == (n, 3) and torch.isfinite(tiny_input.features).all()
    r, parts = reward(tiny_scorer.model, [tiny_scorer.tokenizer.bos_token_id], tiny_input, torch.ones(n, dtype=bool), s)
    assert parts["ce"] == pytest.approx(tiny_input.full_ce, rel=1e-5)
    assert parts["sem"] == pytest.approx(1.0, abs=1e-5) and parts["kept"] == 1.0
    assert r == pytest.approx(-tiny_input.full_ce + s.lambda_sem - s.lambda_len, rel=1e-5)
    half = torch.arange(n) % 2 == 0
    _, parts = reward(tiny_scorer.model, [tiny_scorer.tokenizer.bos_token_id], tiny_input, half, s)
    assert parts["kept"] == pytest.approx(0.5, abs=0.01) and parts["sem"] < 1.0


def test_training_resumes_and_writes_weights(tiny_scorer, tiny_input, tmp_path):
    from gistify_bench.train.controller import ControllerConfig, train

    state = tmp_path / "state.pt"
    one = train(ControllerConfig(epochs=1, samples=2), tmp_path / "a.json", state, False, tiny_scorer, [tiny_input])
    two = train(ControllerConfig(epochs=2, samples=2), tmp_path / "b.json", state, False, tiny_scorer, [tiny_input])
    assert len(one["curve"]) == 1 and len(two["curve"]) == 2 and two["curve"][0] == one["curve"][0]
    written = json.loads((tmp_path / "b.json").read_text())
    assert written["weights"] == two["weights"] and all(math.isfinite(w) for w in written["weights"])


def test_shipped_weights_load_into_reinforce_rl():
    import gistify
    from gistify.text.reinforce import learned_weights

    learned = learned_weights()
    assert len(learned["weights"]) == 3 and all(math.isfinite(w) for w in learned["weights"])
    assert "'train' articles" in learned["data"] and learned["curve"]
    m = gistify.get_method("reinforce-rl")
    assert m.weights == tuple(learned["weights"]) and m.bias == learned["bias"]
    assert gistify.get_method("reinforce-rl", weights=(1, 0, 0)).weights == (1.0, 0.0, 0.0)
