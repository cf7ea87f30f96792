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
    from gistify_bench.train.surprisal import features, scores, targets

    text = prose()[:2500]
    data = features(tiny_scorer, build_trunk(tiny_model, 4), [text], targets(tiny_scorer, [text]))
    full = tiny_scorer.stats(text, layer=4)
    n = len(full.starts)
    assert data["cur"].shape == data["prev"].shape == (n, 32)
    assert torch.allclose(data["cur"], full.hidden, atol=1e-5)
    assert torch.equal(data["prev"][1:5], data["cur"][:4])  # inside a window, t-1's state is the previous row
    assert torch.equal(data["target"], torch.from_numpy(tiny_scorer.stats(text, layer=0).self_info))
    assert scores(data["target"], data["target"])["spearman"] == pytest.approx(1.0)


def test_a_bf16_trunk_copies_the_layers_and_stays_near_float32(tiny_model):
    """precision="bfloat16": the layers are copied in bf16 (the loaded model is untouched), the embeddings are
    shared and read out in bf16, and the states stay close to float32's."""
    x = torch.randint(0, tiny_model.config.vocab_size, (1, 60))
    with torch.inference_mode():
        full = build_trunk(tiny_model, 2)(input_ids=x).last_hidden_state
        trunk = build_trunk(tiny_model, 2, torch.bfloat16)
        half = trunk(input_ids=x).last_hidden_state
    assert half.dtype == torch.bfloat16 and tiny_model.model.layers[0].mlp.up_proj.weight.dtype == torch.float32
    assert trunk.embed_tokens.embed is tiny_model.model.embed_tokens
    cos = torch.nn.functional.cosine_similarity(half.float()[0], full[0], dim=-1)
    assert cos.min() > 0.99, cos.min()


def test_each_depth_has_its_own_head_file():
    from gistify.text.fast import head_file

    assert head_file(4) == HEAD and head_file(2).name == "surprisal_head_L2.safetensors" and head_file(2).is_file()
    _, meta = load_head(head_file(2))
    assert meta["layer"] == 2 and meta["trunk_dtype"] in ("bfloat16", "float32")


def test_the_precision_option_is_checked():
    with pytest.raises(ValueError, match="precision"):
        gistify.compress("some text here", keep=0.5, method="reinforce-shallow", precision="int4")


def test_features_are_computed_once_per_text_and_question(tiny_scorer):
    """The fallback ladder compresses the same text again: the graph and propagation are not run twice, and
    `forget()` (what the speed benchmark calls between timed runs) drops them."""
    from gistify.method import get_method
    from gistify.text.words import Document, segment

    text = prose()[:1500]
    m = get_method("reinforce-fast", "text")
    doc = lambda: Document(text, segment(text), "Where does it live?", tiny_scorer)  # noqa: E731
    first = m.features(doc())
    assert m.features(doc()) is first
    tiny_scorer.forget()
    again = m.features(doc())
    assert again is not first and torch.equal(again, first)


def test_value_clause_keeps_a_relevant_numbers_sentence_whole(tiny_scorer):
    """value_clause: the words of a sentence gain with its best number's weight, so a kept number brings the
    words that say what it is; a sentence without a number gains nothing."""
    from gistify.method import get_method
    from gistify.text.words import Document, segment

    text = "The river is long and wide. One of the numbers for the river is: 5678048. Birds sing at dawn here."
    doc = Document(text, segment(text), "What is the number for the river?", tiny_scorer)
    plain = get_method("reinforce-fast", "text").score(doc)
    whole = get_method("reinforce-fast", "text", value_clause=2.0).score(doc)
    words = [text[s:e] for s, e in doc.words]
    number = words.index("5678048.")
    second = [i for i, w in enumerate(words) if 6 <= i <= number]  # "One ... 5678048."
    gain = whole - plain
    assert (
        gain[second] == pytest.approx(2.0 * plain[number]) and (gain[:6] == 0).all() and (gain[number + 1 :] == 0).all()
    )


def test_the_speed_report_runs_on_the_threads_asked():
    """benches.speed --threads N: refused below 1 before anything loads, and the table says how many threads ran."""
    from gistify_bench.benches import speed

    with pytest.raises(SystemExit):
        speed.main(["--threads", "0", "--methods", "reinforce-shallow"])
    row = {"method": "reinforce-shallow", "tokens_in": 1000, "median_s_per_1k_tokens": 0.1, "peak_rss_mb": 700.0}
    table = speed.table({"machine": "m", "model": "s", "keep": 0.2, "threads": 1, "rows": [row]})
    assert "torch threads 1" in table and "| reinforce-shallow | 100, 700 | – |" in table
