"""The scorer's fast path (gistify.text.fast): the trunk is the full model's first layers exactly, the head is
only used for the scorer and layer it was trained for, and on the real scorer its self-information follows
the full model's."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

import gistify
from conftest import prose, tiny_llama
from gistify.text.fast import HEAD, FastPath, build_trunk, fingerprint, load_head


@pytest.mark.parametrize("layers", [0, 2, 4])
def test_trunk_gives_the_full_models_hidden_states(tiny_model, layers):
    x = torch.randint(0, tiny_model.config.vocab_size, (1, 40))
    with torch.inference_mode():
        full = tiny_model(input_ids=x, output_hidden_states=True).hidden_states[layers]
        cut = build_trunk(tiny_model, layers)(input_ids=x).last_hidden_state
    assert torch.equal(cut, full)


def test_fast_stats_share_the_full_states_across_windows(tiny_scorer):
    text = prose()[:3000]  # several of the tiny scorer's 96-token windows
    full = tiny_scorer.stats(text, layer=4)
    fast = tiny_scorer.stats(text, layer=4, fast=True)
    assert len(full.starts) > 3 * tiny_scorer.window
    assert (fast.starts == full.starts).all()
    assert torch.allclose(fast.hidden, full.hidden, atol=1e-5)
    assert fast.self_info.shape == full.self_info.shape and not (fast.self_info == full.self_info).all()


def test_a_head_is_refused_for_another_layer_or_scorer(tiny_model, tiny_tokenizer, tiny_head):
    with pytest.raises(ValueError, match="surprisal head for layer 4"):
        FastPath(tiny_model, 3, tiny_head)
    other = tiny_llama(tiny_tokenizer, hidden_size=48, intermediate_size=96)
    assert fingerprint(other) != fingerprint(tiny_model)
    with pytest.raises(ValueError, match="train one"):
        FastPath(other, 4, tiny_head)


def test_a_scorer_without_a_head_falls_back_to_the_full_pass_with_a_note(tiny_tokenizer):
    """reinforce-fast is the default method: a scorer with no head trained for it (here the tiny scorer without
    its head, so the shipped one, trained for SmolLM2, is refused) is read by the full pass, and the result
    says so; its words are those `reinforce` keeps."""
    from gistify import Scorer

    scorer = Scorer(tiny_llama(tiny_tokenizer), tiny_tokenizer, window=96, context=16)
    text, question = prose()[:1500], "Where does the river begin?"
    fast = gistify.compress(text, question, keep=0.3, scorer=scorer)
    full = gistify.compress(text, question, keep=0.3, scorer=scorer, method="reinforce")
    assert fast.method == "reinforce-fast" and fast.text == full.text
    assert any("full pass scored instead of the fast path" in n and "train one" in n for n in fast.notes)
    assert not any("fast path" in n for n in full.notes)
    again = gistify.compress(text, question, keep=0.3, scorer=scorer)  # the refusal is remembered, still reported
    assert again.text == fast.text and again.notes == fast.notes and list(scorer._no_fast) == [4]


def test_a_missing_head_names_its_trainer(tmp_path):
    with pytest.raises(FileNotFoundError, match="gistify_bench.train.surprisal"):
        load_head(tmp_path / "absent.safetensors")


def test_the_fast_option_is_checked():
    with pytest.raises(ValueError, match="fast must be True or False"):
        gistify.compress("some text here", keep=0.5, method="reinforce", fast="yes")


@pytest.mark.real
def test_shipped_head_follows_the_full_self_information():
    """On a real article the trained head's u ranks tokens like the full model's (the dev score is in the
    head's metadata; this is another text), and reinforce-fast reads the same layer-4 states."""
    from gistify.text.pipeline import shared_scorer

    scorer = shared_scorer(None)
    _, meta = load_head(HEAD)
    assert meta["fingerprint"] == fingerprint(scorer.model) and meta["layer"] == 4
    text = prose("ampere.txt")[:6000]
    full, fast = scorer.stats(text, layer=4), scorer.stats(text, layer=4, fast=True)
    assert torch.allclose(fast.hidden, full.hidden, atol=1e-4)
    rho = spearmanr(fast.self_info, full.self_info)[0]
    assert rho > 0.6, rho


def test_trainer_pairs_each_token_with_its_full_self_information(tiny_scorer, tiny_model):
    """The head learns u_t from (h_{t-1}, h_t) exactly as the fast path will read them, window by window."""
    from gistify_bench.train.surprisal import features, scores

    text = prose()[:2500]
    data = features(tiny_scorer, build_trunk(tiny_model, 4), [text])
    full = tiny_scorer.stats(text, layer=4)
    n = len(full.starts)
    assert data["cur"].shape == data["prev"].shape == (n, 32)
    assert torch.allclose(data["cur"], full.hidden, atol=1e-5)
    assert torch.equal(data["prev"][1:5], data["cur"][:4])  # inside a window, t-1's state is the previous row
    assert torch.equal(data["target"], torch.from_numpy(tiny_scorer.stats(text, layer=0).self_info))
    assert scores(data["target"], data["target"])["spearman"] == pytest.approx(1.0)
