"""vist's training and inference (gistify/vist/pve.py, gistify/vist/model.py, gistify_bench/train/vist/,
gistify_bench/vist/) and its benchmarks (gistify_bench/benches/vist_*.py): PVE prefers matching pairs, frequency
masking masks frequent tokens, the feature queue, a tiny training run on real prose that lowers the loss and
resumes exactly, per-line cached features equal what inference computes, the inference API and
`compress(method="vist")`. Tiny random Llama, tiny resampler; the encoder is a fake that draws features from each
line's characters, except in one test that reads two short lines with PP-OCRv6."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from conftest import prose, tiny_llama
from gistify.vist.compress import compress
from gistify.vist.config import TRAIN_COMMAND, VistConfig, VistWeightsError
from gistify.vist.encoder import Encoded
from gistify.vist.memory import group_lines
from gistify.vist.model import VistModel
from gistify.vist.pve import FeatureQueue, PVEConfig, importance, mask_positions, pve_loss, token_counts
from gistify_bench.benches import vist_cost, vist_icl, vist_lm, vist_runs
from gistify_bench.eval.cells import write_json
from gistify_bench.eval.report.vist import report
from gistify_bench.train.vist import loop
from gistify_bench.vist import corpus as vist_corpus

pytestmark = pytest.mark.usefixtures("one_thread")


class FakeEncoder:
    """Features that carry the text: token c of a line is a fixed random vector of the character drawn there
    (about two 8-px tokens per character at 32 px); tokens after the line's text are masked."""

    def __init__(self, width: int = 120):
        self.table = torch.randn(256, width, generator=torch.Generator().manual_seed(1))
        self.calls = 0

    def encode(self, rendering) -> Encoded:
        lay = rendering.layout
        t = lay.width // 8
        feats = torch.zeros(len(rendering), t, self.table.shape[1])
        mask = torch.zeros(len(rendering), t, dtype=torch.bool)
        for row in rendering.rows:
            s = rendering.text[row.span[0] : row.span[1]]
            n = min(t, math.ceil(row.end / 8)) if s else 0
            for c in range(n):
                feats[row.image, c] = self.table[ord(s[min(len(s) - 1, c // 2)]) % 256]
            mask[row.image, :n] = True
        self.calls += len(rendering)
        ids = torch.zeros(len(rendering), t, dtype=torch.int64)
        return Encoded(feats, mask, ids, ids.float(), rows=1)


@pytest.fixture(scope="module")
def lm(tiny_tokenizer):
    return tiny_llama(tiny_tokenizer, max_position_embeddings=2048)  # its own: training attaches to it


TINY = dict(lines_per_image=4, latents=4, dim=32, depth=1, heads=2, head_dim=8, xattn_every=2)


def tiny_args(out, *extra):
    return loop.parse(
        [
            *("--out", str(out), "--distant-tokens", "96", "--proximal-tokens", "24", "--batch", "4"),
            *("--lines-per-image", "4", "--latents", "4", "--dim", "32", "--depth", "1", "--heads", "2"),
            *("--head-dim", "8", "--xattn-every", "2", "--llm-dtype", "float32", "--export-dtype", "float32"),
            *("--eval-n", "4", "--queue", "8", "--log-every", "1", "--no-progress", "--lr", "3e-3"),
            *extra,
        ]
    )


def corpus():
    train = {n: prose(f"{n}.txt")[:2500] for n in ("aardwolf", "abacus", "ampere")}
    return {"train": train, "eval": {"astronaut": prose("astronaut.txt")[:1500]}}


# -- PVE ------------------------------------------------------------------------------------------------------------


def test_pve_loss_is_lower_for_matching_pairs():
    g = torch.Generator().manual_seed(0)
    text = torch.randn(8, 16, generator=g)
    visual = text + 0.3 * torch.randn(8, 16, generator=g)
    matched = pve_loss(visual, text)
    shuffled = pve_loss(visual.roll(1, 0), text)
    assert matched < 0.5 < math.log(8) < shuffled
    # overlapping windows of one article are not each other's negatives
    keys = torch.tensor([[0, 0, 10], [0, 5, 15]] + [[i, 0, 10] for i in range(1, 7)])
    near = text.clone()
    near[1] = text[0] + 0.01 * torch.randn(16, generator=g)  # two views of (almost) the same words
    assert pve_loss(near, near, keys=keys) < pve_loss(near, near)


def test_frequency_masking_masks_the_frequent_tokens(tiny_tokenizer):
    texts = [prose(n) for n in ("aardwolf.txt", "abacus.txt", "ampere.txt")]
    counts = token_counts(texts, tiny_tokenizer, len(tiny_tokenizer))
    assert int(counts.sum()) == sum(len(tiny_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    scores = importance(counts, samples=100)
    ids = torch.tensor([tiny_tokenizer(prose("astronaut.txt")[i * 400 : i * 400 + 600])["input_ids"][:96]
                        for i in range(8)])  # fmt: skip
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[3, 50:] = False
    frequent = counts[ids] >= torch.quantile(counts[ids].float(), 0.75)
    rare = counts[ids] <= torch.quantile(counts[ids].float(), 0.25)
    rates = {}
    for mode in ("frequency", "random", "lowest", "none"):
        g = torch.Generator().manual_seed(0)
        draws = torch.stack([mask_positions(ids, valid, scores, PVEConfig(mask=mode), g) for _ in range(20)])
        assert not draws[:, ~valid].any()  # padding is never counted as masked
        per_sample = draws.sum(-1).float().mean(0)  # half of each sample's valid positions, or none
        want = 0 if mode == "none" else torch.ceil(0.5 * valid.sum(1).float())
        assert torch.equal(per_sample, torch.as_tensor(want, dtype=torch.float).expand(8))
        m = draws.float().mean(0)
        rates[mode] = (m[frequent & valid].mean().item(), m[rare & valid].mean().item())
    f, r = rates["frequency"]
    assert f > 0.85 and r < 0.2  # frequent tokens are masked far more often than rare ones
    assert abs(rates["random"][0] - rates["random"][1]) < 0.15  # random masking does not care
    assert rates["lowest"] == (1.0, 0.0)
    with pytest.raises(ValueError, match="mask"):
        PVEConfig(mask="idf")


def test_the_queue_adds_negatives_and_remembers_keys():
    q = FeatureQueue(4, 3)
    assert len(q) == 0
    q.push(torch.eye(3), torch.tensor([[0, 0, 5], [1, 0, 5], [2, 0, 5]]))
    q.push(torch.ones(2, 3), torch.tensor([[3, 0, 5], [4, 0, 5]]))  # FIFO: the first entry is overwritten
    assert len(q) == 4 and q.keys[:, 0].tolist() == [4, 1, 2, 3]
    feats, ok = q.negatives(torch.tensor([[1, 3, 9], [7, 0, 1]]))
    assert feats.shape == (4, 3) and ok.tolist() == [[True, False, True, True], [True] * 4]
    state = q.state_dict()
    q2 = FeatureQueue(1, 1)
    q2.load_state_dict(state)
    assert torch.equal(q2.features, q.features) and (q2.filled, q2.head) == (q.filled, q.head)
    # more negatives: the same pairs give a larger loss, and the queue's own-text entries are left out
    g = torch.Generator().manual_seed(0)
    text = torch.randn(4, 8, generator=g)
    visual = text + 0.5 * torch.randn(4, 8, generator=g)
    keys = torch.tensor([[i, 0, 1] for i in range(4)])
    big = FeatureQueue(64, 8)
    big.push(torch.randn(64, 8, generator=g), torch.tensor([[10 + i, 0, 1] for i in range(64)]))
    assert pve_loss(visual, text, keys=keys, queue=big) > pve_loss(visual, text, keys=keys)
    own = FeatureQueue(4, 8)
    own.push(text[:1], keys[:1])  # a window's own text again (a later view of it): never its negative
    assert pve_loss(visual[:1], text[:1], keys=keys[:1], queue=own) == 0
    other = torch.tensor([[0, 1, 2]])  # the same article, lines that do not overlap: a true negative
    assert math.isclose(pve_loss(text[:1], text[:1], keys=other, queue=own).item(), math.log(2), rel_tol=1e-5)


# -- training -------------------------------------------------------------------------------------------------------


def test_group_lines_pads_the_last_image():
    pages = group_lines(torch.ones(5, 3, 2), torch.ones(5, 3, dtype=torch.bool), 4)
    assert pages.features.shape == (2, 12, 2) and pages.mask.sum(1).tolist() == [12, 3]
    assert group_lines(torch.ones(0, 3, 2), torch.ones(0, 3, dtype=torch.bool), 4).mask.shape == (1, 12)


def test_a_tiny_training_run_lowers_the_loss_and_resumes_exactly(lm, tiny_tokenizer, tmp_path):
    enc = FakeEncoder()
    run = ("--steps", "20", "--save-every", "4", "--lr", "1e-2")
    args = tiny_args(tmp_path / "a", *run)
    card = loop.train(args, lm, tiny_tokenizer, enc, corpus())

    def losses(state=None):
        """LM and PVE (in-batch negatives) losses of one fixed batch of training windows."""
        torch.manual_seed(args.seed)
        model = VistModel(lm, tiny_tokenizer, args.model_config(), enc)
        data = vist_corpus.Corpus(corpus()["train"], model, enc, tmp_path / "a" / "features", args.windowing, "train")
        model.set_token_counts(token_counts(data.texts, tiny_tokenizer, len(tiny_tokenizer)), len(data.windows))
        if state is not None:
            model.load_trained(state)
        batch = data.batch(vist_corpus.windows_for(data, 10_000, 0, 8, 0))
        scores = model.importance()
        with torch.no_grad():
            _, info = loop.step_loss(model, batch, PVEConfig(queue=0), None, torch.Generator(), scores)
        return info

    before, after = losses(), losses(torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["trained"])
    assert after["lm"] < before["lm"] - 0.02 and after["pve"] < before["pve"] - 0.1, (before, after)
    held = card["held_out"]["nll_per_token"]
    assert set(held) >= {"base", "vist", "shuffled", "text", "vist_gain"} and held["windows"] == 4
    assert (tmp_path / "a" / "vist.safetensors").is_file() and (tmp_path / "a" / "train.log").is_file()
    encoded = enc.calls
    assert encoded > 0 and list((tmp_path / "a" / "features").glob("train-*.npz"))

    # the same run, interrupted after 5 steps and resumed, ends in the same state; features come from the cache
    b = tmp_path / "b"
    (b / "features").mkdir(parents=True)
    for f in (tmp_path / "a" / "features").glob("*.npz"):
        (b / "features" / f.name).write_bytes(f.read_bytes())
    enc2 = FakeEncoder()
    run = ("--steps", "20", "--save-every", "4", "--lr", "1e-2")
    stopped = loop.train(tiny_args(b, *run, "--stop-at-step", "5"), lm, tiny_tokenizer, enc2, corpus())
    assert stopped == {"stopped": 5} and enc2.calls == 0
    loop.train(tiny_args(b, *run), lm, tiny_tokenizer, enc2, corpus())
    ca, cb = (torch.load(d / "checkpoint.pt", weights_only=False) for d in (tmp_path / "a", b))
    assert ca["step"] == cb["step"] == 20
    assert all(torch.equal(ca["trained"][k], cb["trained"][k]) for k in ca["trained"])
    assert torch.equal(ca["queue"]["features"], cb["queue"]["features"])
    assert [h["lm"] for h in ca["history"]] == [h["lm"] for h in cb["history"]]
    with pytest.raises(ValueError, match="another configuration"):
        loop.train(tiny_args(b, *run, "--mask", "random"), lm, tiny_tokenizer, enc2, corpus())


def test_training_standardises_features_with_the_corpus_statistics(trained, lm, tiny_tokenizer, tmp_path):
    model = VistModel(lm, tiny_tokenizer, VistConfig(**TINY), FakeEncoder())
    data = vist_corpus.Corpus(
        corpus()["train"], model, model.encoder, tmp_path / "features", tiny_args(tmp_path).windowing, "train"
    )
    data.ensure(None, log=lambda _: None)
    mean, std = data.feature_stats()
    every = np.concatenate([lf.features[lf.mask].astype(np.float64) for lf in data.lines])
    assert np.allclose(mean.numpy(), every.mean(0), atol=1e-5) and np.allclose(
        std.numpy(), every.std(0, ddof=1), atol=1e-4
    )
    # the trained weights carry them, and in float32 whatever the export dtype
    from safetensors.torch import load_file

    trained_model = VistModel.from_pretrained(trained, lm, tiny_tokenizer, FakeEncoder())
    assert torch.allclose(trained_model.resampler.feature_mean, mean)
    assert torch.allclose(trained_model.resampler.feature_std, std)
    saved = load_file(str(trained_model.save(tmp_path / "bf16.safetensors", dtype=torch.bfloat16)))
    assert saved["resampler.proj.weight"].dtype == torch.bfloat16
    assert torch.equal(saved["resampler.feature_mean"], trained_model.resampler.feature_mean)
    assert torch.equal(saved["resampler.feature_std"], trained_model.resampler.feature_std)


def test_copy_windows_repeat_a_passage_of_their_distant_part(lm, tiny_tokenizer, tmp_path):
    model = VistModel(lm, tiny_tokenizer, VistConfig(**TINY), FakeEncoder())
    args = tiny_args(tmp_path)
    data = vist_corpus.Corpus(corpus()["train"], model, model.encoder, tmp_path / "features", args.windowing, "train")
    windows = vist_corpus.windows_for(data, 3, 0, 8, 0, copy=0.5)
    assert windows == vist_corpus.windows_for(data, 3, 0, 8, 0, copy=0.5)  # a function of (seed, step, micro)
    copies = [w for w in windows if w.start is not None]
    assert len(copies) == 4 and all(w.first <= w.start < w.split for w in copies)
    batch = data.batch(windows)
    assert batch["copy"].tolist() == [w.start is not None for w in windows]
    for w in copies:
        text, spans = data.texts[w.article], data.lines[w.article].spans
        passage = text[int(spans[w.start, 0]) :]
        assert data.distant_text(w).find(text[int(spans[w.start, 0]) : int(spans[w.start, 1])]) >= 0
        assert data.proximal_ids(w) == tiny_tokenizer(passage, add_special_tokens=False)["input_ids"][:24]


def test_cached_line_features_are_what_inference_reads(lm, tiny_tokenizer, tmp_path):
    """Training reads features cached per line of a whole article; inference renders the distant text alone.
    Greedy wrapping makes them the same lines, pixel for pixel: PP-OCRv6 on two short lines."""
    from gistify.vist.encoder import TextImageEncoder

    text = "The aardwolf is a small insectivorous mammal.\nIt eats termites at night, by the thousand."
    encoder = TextImageEncoder()
    model = VistModel(lm, tiny_tokenizer, VistConfig(**TINY, font_size=24), encoder)
    lf = vist_corpus.LineFeatures(text, model.config, encoder, tmp_path / "f.npz")
    lf.ensure(range(len(lf)))
    assert len(lf) >= 2 and lf.have.all()
    pages = model.read([text[int(lf.spans[1, 0]) :]])[0]  # from the second line on, rendered alone
    cached = lf.pages(1, len(lf))
    assert torch.allclose(pages.features.float(), cached.features, rtol=2e-3, atol=2e-3)  # both float16-rounded
    assert torch.equal(pages.mask, cached.mask) and pages.mask.any()
    again = vist_corpus.LineFeatures(text, model.config, encoder, tmp_path / "f.npz")  # read back from disk
    assert again.have.all() and np.array_equal(again.spans, lf.spans)
    # one memory token per stretch of a line: the windows' slots and positions are what inference computes
    slotted = VistModel(lm, tiny_tokenizer, VistConfig(**TINY, font_size=24, slots_per_line=4), encoder)
    data = vist_corpus.Corpus({"a": text}, slotted, encoder, tmp_path, vist_corpus.Windowing(), "x")
    data.ensure()
    window = vist_corpus.Window(0, 1, len(lf))
    cached, read = data.pages(window), slotted.read([data.distant_text(window)])[0]
    assert torch.equal(cached.filled, read.filled) and torch.equal(cached.positions, read.positions)
    assert read.filled.any() and read.positions[read.filled].max() < 0


# -- inference ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(lm, tiny_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("vist")
    loop.train(tiny_args(out, "--steps", "3"), lm, tiny_tokenizer, FakeEncoder(), corpus())
    return out / "vist.safetensors"


def test_the_inference_api(trained, lm, tiny_tokenizer):
    m = VistModel.from_pretrained(trained, lm, tiny_tokenizer, FakeEncoder())
    assert m.card["training"]["steps"] == 3 and m.config.latents == 4
    assert int(m.samples) > 0 and int(m.token_counts.sum()) > 0  # the corpus' token counts came with the weights
    distant, prox = prose("aardwolf.txt")[:600], "The aardwolf"
    out = m.generate(distant, prox, max_new_tokens=4)
    assert isinstance(out, str)
    loss = m.loss(distant, " is a small mammal.", prox)
    assert math.isfinite(loss) and math.isclose(m.perplexity(distant, " is a small mammal.", prox), math.exp(loss))
    plain = m.loss(None, " is a small mammal.", prox)
    ids = tiny_tokenizer(prox + " is a small mammal.", add_special_tokens=False, return_tensors="pt")["input_ids"]
    n = len(tiny_tokenizer(prox, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logp = lm(ids).logits[0, :-1].log_softmax(-1)
    want = -logp[torch.arange(n - 1, ids.shape[1] - 1), ids[0, n:]].mean().item()
    assert math.isclose(plain, want, rel_tol=1e-5)  # no distant text: the plain LLM
    with pytest.raises(ValueError, match="proximal_text"):
        m.generate(distant, "")


def test_prefix_mode_reads_the_memory(lm, tiny_tokenizer):
    m = VistModel(lm, tiny_tokenizer, VistConfig(**TINY, inject="prefix"), FakeEncoder())
    mem = m.memory(m.read(["The aardwolf eats termites.", ""]))
    assert mem.visual_tokens == [4, 0]
    ids = torch.tensor([[5, 6, 7], [5, 6, 7]])
    with torch.no_grad():
        logits = m.logits(ids, torch.ones_like(ids), mem)
        assert torch.allclose(logits[1], lm(ids[1:]).logits[0], atol=1e-5)  # no memory: the plain LLM
    assert isinstance(m.generate("The aardwolf eats termites.", "It", max_new_tokens=2), str)


def test_compress_with_vist(trained, lm, tiny_tokenizer):
    import gistify

    m = VistModel.from_pretrained(trained, lm, tiny_tokenizer, FakeEncoder())
    context = prose("abacus.txt")[:3000]
    n = len(tiny_tokenizer(context, add_special_tokens=False)["input_ids"])
    r = gistify.compress(context, "What is an abacus?", method="vist", model=m, tokens=n // 3)
    assert r.method == "vist" and r.tokens_in == n and r.tokens_out <= n // 3
    assert r.tokens_out == r.visual_tokens + r.proximal_tokens and r.visual_tokens > 0 and r.proximal_tokens > 0
    (s, e), (ds, de) = r.kept_spans[0], r.distant_spans[0]
    assert e == len(context) and ds == 0 and de == s and r.text == context[s:] and r.dropped_spans == []
    assert any("not a text" in note for note in r.notes)
    held = m.card["held_out"]["nll_per_token"]  # 3 tiny steps do not learn to read, and the result says so
    assert abs(held["shuffled"] - held["vist"]) < 0.01 and any("do not read the memory" in x for x in r.notes)
    m.card = {**m.card, "held_out": {"nll_per_token": {**held, "shuffled": held["vist"] + 0.05}}}  # weights that read
    reads = gistify.compress(context, method="vist", model=m, tokens=n // 3)
    assert not any("do not read the memory" in x for x in reads.notes)
    assert isinstance(r.generate(" Answer:", max_new_tokens=2), str)
    json.dumps(r.to_dict())
    default = compress(context, model=m)  # no budget: the proximal window vist was trained with
    assert abs(default.proximal_tokens - 24) <= 2
    tight = compress(context, model=m, tokens=5)  # below what images cost: all read as images, and said so
    assert tight.proximal_tokens == 0 and any("below what the whole context costs" in x for x in tight.notes)
    with pytest.raises(ValueError, match="'vist' has no parameter protect"):
        gistify.compress(context, method="vist", model=m, tokens=50, protect=[r"\d+"])


def test_missing_weights_say_how_to_make_them(tmp_path):
    import gistify

    with pytest.raises(VistWeightsError, match=re.escape(TRAIN_COMMAND)):
        VistModel.from_pretrained(tmp_path / "vist.safetensors")
    with pytest.raises(VistWeightsError, match=re.escape(TRAIN_COMMAND)):
        gistify.compress("Some context to read.", method="vist", weights=tmp_path / "none.safetensors")


# -- gistify_bench.benches.vist_* ---------------------------------------------------------------------------------


def test_the_lm_task_scores_every_way_on_the_same_tokens(trained, lm, tiny_tokenizer, tmp_path):

    m = VistModel.from_pretrained(trained, lm, tiny_tokenizer, FakeEncoder())
    articles = {"astronaut": prose("astronaut.txt")[:5000], "abacus": prose("abacus.txt")[:5000]}
    r = vist_lm.lm_task(m, articles, distant=96, n=3, cache=tmp_path)
    ways = r["ways"]
    assert set(ways) == {"none", "vist", "shuffled", "truncate", "reinforce", "full"}
    assert set(r["scored_tokens"].values()) == {128 * r["windows"]} and r["windows"] == 3  # as each way counted
    assert all(math.isfinite(w["nll"]) and w["ppl"] > 1 for w in ways.values())
    # truncation reads as many LLM-side tokens as vist; reinforce at most as many; none the fewest, full the most
    assert ways["truncate"]["llm_tokens"] == ways["vist"]["llm_tokens"] >= ways["reinforce"]["llm_tokens"]
    assert ways["none"]["llm_tokens"] == vist_lm.PROXIMAL < ways["vist"]["llm_tokens"] < ways["full"]["llm_tokens"]
    assert 0.5 * 96 <= r["distant_tokens"] <= 96


def test_icl_data_is_balanced_and_never_names_the_label():

    articles = {n.capitalize(): prose(f"{n}.txt") for n in ("aardwolf", "abacus", "ampere", "astronaut")}
    d = vist_icl.icl_data(articles, classes=3, demos=8, per_class=4, seed=1)
    assert len(d["labels"]) == 3 and len(d["tests"]) == 12
    counts = [sum(y == label for _, y in d["demos"]) for label in d["labels"]]
    assert max(counts) - min(counts) <= 1 and sum(counts) == 8
    assert not {x for x, _ in d["demos"]} & {x for x, _ in d["tests"]}
    for x, y in d["demos"] + d["tests"]:
        assert y.lower() not in x.lower()
    assert d == vist_icl.icl_data(articles, classes=3, demos=8, per_class=4, seed=1)  # a function of the seed
    with pytest.raises(ValueError, match="enough sentences"):
        vist_icl.icl_data(articles, classes=5, demos=8, per_class=4, seed=1)
    # a title names its sentences in any inflection; a short title (no word over 3 letters) is matched whole
    amps = "Amperes measure the current that flows in a wire today."
    dna = "The DNA of a cell is very long and folded up tightly."
    ants = "Ants are not named here at all, not even once, really."
    text = " ".join([amps, dna, ants])
    assert vist_icl.sentences(text, "Ampere") == [dna, ants]
    assert vist_icl.sentences(text, "DNA") == [amps, ants]


def test_the_icl_task_scores_labels_each_way(trained, lm, tiny_tokenizer):

    m = VistModel.from_pretrained(trained, lm, tiny_tokenizer, FakeEncoder())
    articles = {n.capitalize(): prose(f"{n}.txt") for n in ("aardwolf", "abacus", "ampere")}
    r = vist_icl.icl_task(m, articles, classes=2, per_class=2, seed=0, distant_demos=4)
    assert r["tests"] == 4 and r["visual_tokens"] > 0
    ways = r["ways"]
    assert all(0 <= w["accuracy"] <= 1 and 0 <= w["accuracy_calibrated"] <= 1 for w in ways.values())
    assert ways["none"]["llm_tokens_context"] == 0
    assert ways["truncate"]["llm_tokens_context"] == ways["vist"]["llm_tokens_context"] == r["visual_tokens"]
    assert ways["full"]["llm_tokens_context"] == r["distant_text_tokens"]


def test_cached_label_scores_equal_scoring_each_row_whole(trained, lm, tiny_tokenizer):

    m = VistModel.from_pretrained(trained, lm, tiny_tokenizer, FakeEncoder())
    context = tiny_tokenizer("Sentence: The aardwolf eats termites.\nTopic: Aardwolf\n\n")["input_ids"]
    memory = m.memory(m.read(["The abacus is a counting frame.\nThe ampere is a unit of current."]))
    prompt, labels = "Sentence: It counts beads.\nTopic:", ["Abacus", "Aardwolf", "Ampere unit of current"]
    for ctx, mem in ((context, None), ([], memory), (context, memory)):
        got = vist_icl.label_scores(m, vist_icl.context_cache(m, ctx, mem), mem, prompt, labels)
        head = ctx + tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        rows = [head + tiny_tokenizer(" " + y, add_special_tokens=False)["input_ids"] for y in labels]
        ids, mask = vist_corpus.pad(rows)
        scored = torch.arange(ids.shape[1])[None, :] >= len(head)
        from gistify.vist.memory import Memory

        k = len(labels)
        whole = None if mem is None else Memory(mem.tokens.expand(k, -1, -1), mem.mask.expand(k, -1), None, None, [])
        with torch.no_grad():
            want = -m.nll(ids, mask, whole, scored)[0]
        assert torch.allclose(got, want, atol=1e-4), (len(ctx), mem is None, got, want)


def test_onnx_flops_count_convolutions_and_matmuls():
    from onnx import TensorProto, helper, numpy_helper

    from gistify_bench.benches.flops import Decoder, onnx_flops

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    m = numpy_helper.from_array(np.ones((256, 10), np.float32), "m")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),  # (1, 4, 8, 8)
            helper.make_node("Flatten", ["y"], ["f"]),  # (1, 256)
            helper.make_node("MatMul", ["f", "m"], ["z"]),  # (1, 10)
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [w, m],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    conv, matmul = 2 * 4 * 8 * 8 * 27, 2 * 10 * 256
    assert onnx_flops(model, {"x": [1, 3, 8, 8]}) == conv + matmul
    assert onnx_flops(model, {"x": [1, 3, 8, 8]}, ["y"]) == conv  # only what y depends on
    assert onnx_flops(model, {"x": [2, 3, 8, 8]}) == 2 * (conv + matmul)
    d = Decoder(layers=2, width=8, ffn=16, heads=2, kv_heads=1, vocab=50)
    assert d.prefill_flops(10) - d.prefill_flops(10, 1) == 2 * 9 * 8 * 50  # the LM head on 1 token, not 10
    # cross-attention: q, o over 3 tokens (d x d), k, v over 5 memory tokens (6 -> d_kv 4), 3 x 5 scores
    assert d.cross_attention_flops(3, 5, 6) == 2 * 3 * 8 * 16 + 2 * 5 * 6 * 8 + 4 * 3 * 5 * 8


def test_the_cost_task_and_the_report(trained, lm, tiny_tokenizer, tmp_path):

    m = VistModel.from_pretrained(trained, lm, tiny_tokenizer, FakeEncoder())
    r = vist_cost.cost_task(m, {"astronaut": prose("astronaut.txt")[:4000]}, [200], new_tokens=2)
    row = r["rows"][0]
    assert row["plain"]["llm_tokens"] == 200 + vist_lm.PROXIMAL
    assert row["vist"]["llm_tokens"] == row["vist"]["visual_tokens"] + vist_lm.PROXIMAL
    assert row["vist"]["lines"] > 0 and all(v > 0 for v in row["vist"]["flops_parts"].values())
    assert row["plain"]["seconds"] > 0 and row["vist"]["seconds"] >= row["vist"]["read_seconds"] > 0
    write_json(tmp_path / "cost.json", r)
    assert "| 200 | 329 /" in report(tmp_path) and (tmp_path / "report.md").is_file()


def test_vist_is_listed_and_compress_takes_its_dataclass(trained, lm, tiny_tokenizer):
    import gistify
    from gistify.vist.method import Vist

    assert "vist" in gistify.methods() and "vist" in gistify.methods("rendered")
    with pytest.raises(ValueError, match="proximal_tokens"):
        Vist(proximal_tokens=-1)
    m = VistModel.from_pretrained(trained, lm, tiny_tokenizer, FakeEncoder())
    text = prose("aardwolf.txt")[:1500]
    r = gistify.compress(text, method=Vist(proximal_tokens=20), model=m)
    assert r.method == "vist" and r.proximal_tokens == 20 and r.text == text[r.kept_spans[0][0] :]


def test_reading_a_long_text_in_chunks_gives_what_reading_it_whole_gives(lm, tiny_tokenizer):
    m = VistModel(lm, tiny_tokenizer, VistConfig(**TINY), FakeEncoder())
    text = (
        prose("abacus.txt")[:3000]
        + "\n\n\n    indented line   with   blanks   \n"
        + "東京は日本の首都です。" * 8
        + "\n"
        + "x" * 200
        + "\n\n"
    )
    whole = m.read([text], chunk_lines=10_000)[0]
    for chunk in (1, 3, 7):
        pieces = m.read([text], chunk_lines=chunk)[0]
        assert torch.equal(pieces.features, whole.features) and torch.equal(pieces.mask, whole.mask)
    assert len(m.read([""])[0]) == 1  # an empty text: one blank image


def test_resampling_images_in_chunks_gives_the_same_memory(lm, tiny_tokenizer):
    m = VistModel(lm, tiny_tokenizer, VistConfig(**TINY), FakeEncoder())
    pages = m.read([prose("abacus.txt")[:2000], prose("ampere.txt")[:700]])
    with torch.no_grad():
        whole, parts = m.memory(pages, chunk_images=1000), m.memory(pages, chunk_images=3)
    assert len(pages[0]) > 3  # several chunks
    assert torch.allclose(whole.tokens, parts.tokens, atol=1e-6) and torch.equal(whole.mask, parts.mask)
    assert torch.allclose(whole.cls, parts.cls, atol=1e-6) and whole.images == parts.images


def test_diversity_tells_a_collapsed_memory(lm, tiny_tokenizer, tmp_path):

    m = VistModel(lm, tiny_tokenizer, VistConfig(**TINY), FakeEncoder())
    articles = {n: prose(f"{n}.txt") for n in ("aardwolf", "abacus", "ampere")}
    live = vist_runs.diversity(m, articles, texts=3, chars=600)
    assert -1 <= live["across_slots"] < 0.99 and live["across_texts"] < 1.0
    with torch.no_grad():  # a resampler whose latents never take in what they attend to: the same memory always
        for attention, _ in m.resampler.layers:
            attention.to_out.weight.zero_()
    dead = vist_runs.diversity(m, articles, texts=3, chars=600)
    assert dead["across_texts"] == pytest.approx(1.0, abs=1e-4)
    write_json(tmp_path / "diversity.json", {"runs": {"live": live, "dead": dead}})
    assert f"| dead | {dead['across_texts']:.4f} |" in report(tmp_path)


def test_the_oracle_probe_trains_the_cross_attention_on_a_perfect_memory(lm, tiny_tokenizer, tmp_path):
    from gistify_bench.train import oracle as vist_oracle

    args = vist_oracle.parse(
        [*("--steps", "20", "--lr", "1e-2", "--batch", "4", "--dim", "16", "--xattn-every", "2"),
         *("--distant-tokens", "96", "--proximal-tokens", "24", "--llm-dtype", "float32", "--eval-n", "4"),
         *("--eval-every", "10", "--cache", str(tmp_path), "--no-progress")]
    )  # fmt: skip
    result = vist_oracle.run(args, lm, tiny_tokenizer, corpus())
    curve = result["curve"]
    assert [c["step"] for c in curve] == [0, 10, 20] and result["held_out_copy_windows"] == 4
    assert curve[-1]["own"] < curve[0]["own"] - 0.03, curve  # the blocks and the map learn
    assert "--copy 1.0" in result["command"]

    write_json(tmp_path / "oracle.json", result)
    assert f"| 20 | {curve[-1]['own']:.4f} |" in report(tmp_path)
    oracle = vist_oracle.OracleMemory(lm.get_input_embeddings(), 16, 8)
    ids = torch.tensor([[5, 6, 7], [7, 6, 5]])
    memory = oracle(ids)
    assert memory.shape == (2, 3, 16) and not torch.allclose(memory[0, 0], memory[1, 2])  # same token, other place


def test_the_teacher_reads_the_llm_own_states_and_pools_them(lm, tiny_tokenizer, tmp_path):
    """Issue 13, steps 2-3: the memory is the frozen LLM's hidden states of the distant text; the gate starts
    closed (step 0 is the plain LLM), the blocks learn to read, and R states pool into one at their mean."""
    import dataclasses

    from safetensors.torch import save_file

    from gistify_bench.train import teacher as vist_teacher

    flags = [*("--steps", "20", "--lr", "1e-2", "--batch", "4", "--layer", "1", "--xattn-layers", "1,3"),
             *("--distant-tokens", "96", "--proximal-tokens", "24", "--eval-n", "4", "--eval-every", "10"),
             *("--copy-steps", "10", "--cache", str(tmp_path), "--no-progress"),
             *("--out", str(tmp_path / "t"))]  # fmt: skip
    args = vist_teacher.parse(flags)
    result, teacher = vist_teacher.run(args, lm, tiny_tokenizer, corpus())
    curve, final = result["curve"], result["final"]
    assert [c["step"] for c in curve] == [0, 10, 20]
    assert curve[0]["copy_own"] == pytest.approx(curve[0]["copy_none"], abs=1e-6)  # the closed gate
    assert curve[-1]["copy_own"] < curve[0]["copy_own"] - 0.03, curve  # it reads what it is given
    assert final["copy_own"]["n"] == 4 and final["copy_own"]["ci95"][0] <= final["copy_own"]["mean"]
    assert all(g != 0 for g in result["gates"])
    reparsed = vist_teacher.parse(result["command"].split()[3:])
    assert reparsed == dataclasses.replace(args, cache=None, progress=True, out=None)  # the command is the run

    write_json(tmp_path / "teacher" / "r1.json", result)
    assert f"| r1 | 1 | 1 | - | 20 | {final['copy_own']['mean']:.3f}" in report(tmp_path)

    saved = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.trained_state().items()}, str(saved))
    assert not any(k.startswith("lm") or "_trunk" in k for k in teacher.trained_state())  # the LLM is not saved
    pooled = vist_teacher.Teacher(lm, dataclasses.replace(args, r=2, init=str(saved)))
    assert vist_teacher._load_init(pooled, str(saved)) == ["xattn"]
    assert torch.equal(pooled.xattn.blocks[0].q_proj.weight, teacher.xattn.blocks[0].q_proj.weight)
    h, mask = torch.randn(1, 5, lm.config.hidden_size), torch.ones(1, 5, dtype=torch.bool)
    memory, kept, positions = pooled.memory.compress(h, mask)
    assert memory.shape == (1, 3, lm.config.hidden_size) and kept.all()
    assert positions.tolist() == [[-4.5, -2.5, -1.0]]  # the mean position of each pair; the last token at -1
    assert torch.allclose(memory[0, 0], h[0, :2].mean(0), atol=1e-5)  # the pool starts as the mean
    with pytest.raises(ValueError, match="gate"):
        vist_teacher.TeacherConfig(gate=1.5)
    with pytest.raises(ValueError, match="xattn_layers"):
        vist_teacher.TeacherConfig(xattn_layers="18,x")


def test_the_vision_path_is_distilled_into_the_teacher_memory(lm, tiny_tokenizer, tmp_path):
    """Issue 13, step 4: a local resampler learns each stretch's pooled teacher state from the line features
    (held-out error falls), the held-out table has every arm with its control, and end to end moves the resampler
    and the blocks."""
    import dataclasses

    from safetensors.torch import save_file

    from gistify_bench.train import distill
    from gistify_bench.train import teacher as vist_teacher

    teacher = vist_teacher.Teacher(lm, vist_teacher.TeacherConfig(layer=1, xattn_layers="1,3"))
    saved = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.trained_state().items()}, str(saved))
    flags = [*("--teacher", str(saved), "--layer", "1", "--xattn-layers", "1,3", "--steps", "30", "--batch", "4"),
             *("--lr", "3e-3", "--depth", "1", "--distant-tokens", "96", "--proximal-tokens", "24", "--eval-n", "4"),
             *("--eval-every", "15", "--e2e-steps", "2", "--e2e-lr", "1e-2", "--e2e-blocks", "trained"),
             *("--train-windows", "12", "--context-layers", "1", "--warmup", "3", "--train-dtype", "float32"),
             *("--cache", str(tmp_path), "--no-progress", "--out", str(tmp_path / "d"))]  # fmt: skip
    args = distill.parse(flags)
    result, model = distill.run(args, lm, tiny_tokenizer, corpus(), FakeEncoder())
    curve = result["regression"]
    assert [c["step"] for c in curve] == [0, 15, 30]
    assert curve[-1]["error"] < curve[0]["error"] - 0.05, curve  # it learns the stretches' states
    assert curve[-1]["constant_error"] > 0 and curve[0]["constant_error"] == curve[-1]["constant_error"]
    assert set(curve[-1]["by_stretch"]) == {f"stretch {j}" for j in range(4)} and len(curve[-1]["by_rarity"]) == 3
    assert 0 <= result["target_mismatch"]["relative_error"] and result["target_mismatch"]["windows"] > 0
    table, paired = result["after_regression"]["table"], result["after_regression"]["paired"]
    for arm in ("none", "teacher_own", "teacher_other", "teacher_slots_own", "teacher_slots_other",
                "mean_embedding_own", "mean_embedding_other", "vision_own", "vision_other", "truncate"):  # fmt: skip
        assert table[f"copy_{arm}"]["n"] == 4 and table[f"continuation_{arm}"]["n"] == 4, arm
    assert table["copy_vision_own"]["mean"] == pytest.approx(table["copy_none"]["mean"], abs=1e-5)  # closed gates
    assert 1.5 < table["text_tokens_per_memory_token"] < 8  # 4 stretches of a line of ~10 tokens
    # paired: the mean of the per-window differences, on the same windows
    per = result["after_regression"]["per_window"]
    d = paired["copy: vision - truncate"]
    assert d["n"] == 4 and d["mean"] == pytest.approx(
        sum(a - b for a, b in zip(per["copy_vision_own"], per["copy_truncate"])) / 4, abs=1e-4
    )
    assert len(result["end_to_end"]) == 2 and all(g != 0 for g in result["gates"])  # the gates opened
    assert result["gates_before"] == [0.0, 0.0] and result["seconds_per_step"]["regression"] > 0
    assert distill.parse(result["command"].split()[3:]) == dataclasses.replace(
        args, cache=None, progress=True, out=None
    )
    write_json(tmp_path / "distill" / "tiny.json", result)
    text = report(tmp_path)
    assert "vist distilled into the teacher's memory: tiny" in text and "after 2 end-to-end steps" in text
    assert f"| vist (PP-OCRv6 features, resampled) | {table['copy_vision_own']['mean']:.3f} [" in text

    # what it trained is vist itself: saved, loaded and read by VistModel with the positions of its slots
    saved = model.save(tmp_path / "vist.safetensors", {"llm": None}, dtype=torch.float32)
    loaded = VistModel.from_pretrained(saved, lm=lm, tokenizer=tiny_tokenizer, encoder=FakeEncoder())
    assert loaded.config.slots_per_line == 4 and loaded.config.xattn_layers == (1, 3)
    text = prose("astronaut.txt")[:400]
    memory = loaded.memory(loaded.read([text]))
    n = len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])
    kept = memory.positions[memory.mask]
    assert 1.5 < n / len(kept) < 8 and kept.max() < 0 and kept.min() >= -n  # the text's positions, before the text
    assert bool((kept.diff() > 0).all())  # in reading order
    # vist_bench (step 5) on it: every kind of window, every way, the token counts that make the comparison
    from gistify_bench.benches import vist_bench

    articles = {"astronaut": prose("astronaut.txt")[:3000], "abacus": prose("abacus.txt")[:3000]}
    bench = vist_bench.bench_task(loaded, articles, distant=96, n=2, cache=tmp_path, progress=False, proximal=24)
    t = bench["table"]
    assert bench["windows"] == {"continuation": 2, "far_copy": 2, "distant_fact": 2}
    for kind in ("continuation", "far_copy"):
        assert set(t[kind]) == set(vist_bench.WAYS), kind
        assert t[kind]["truncate"]["llm_tokens"] == t[kind]["vist"]["llm_tokens"] < t[kind]["full"]["llm_tokens"]
        assert t[kind]["last_k_vist"]["llm_tokens"] > t[kind]["last_k"]["llm_tokens"]
        assert t[kind]["last_k_other"]["n"] == t[kind]["last_k_vist"]["n"] == 2
    assert 0 <= t["distant_fact"]["full_exact"]["mean"] <= 1 and t["distant_fact"]["vist_exact"]["n"] == 2
    d, per = bench["paired"]["far_copy: vist - truncate"], bench["per_window"]["far_copy"]
    assert d["n"] == 2 and d["mean"] == pytest.approx((sum(per["vist"]) - sum(per["truncate"])) / 2, abs=1e-4)
    assert "distant_fact_exact: vist - none" in bench["paired"]
    write_json(tmp_path / "bench.json", bench)
    assert f"| last_k_vist | {t['continuation']['last_k_vist']['mean']:.3f} [" in report(tmp_path)
    again, _ = distill.run(dataclasses.replace(args, init=str(saved), steps=0, e2e_steps=0, out=str(tmp_path / "e")),
                           lm, tiny_tokenizer, corpus(), FakeEncoder())  # fmt: skip
    assert again["final"]["table"]["copy_vision_own"]["mean"] == pytest.approx(
        result["final"]["table"]["copy_vision_own"]["mean"], abs=1e-4
    )
    # a reader trained on the teacher's own states in vist's layout (the vision path's ceiling): only the blocks move
    reader = dataclasses.replace(args, init=str(saved), steps=0, e2e_steps=2, e2e_memory="teacher_slots",
                                 out=str(tmp_path / "r"))  # fmt: skip
    ceiling, trained = distill.run(reader, lm, tiny_tokenizer, corpus(), FakeEncoder())
    assert len(ceiling["end_to_end"]) == 2 and all(c["kl"] == 0 for c in ceiling["end_to_end"])
    assert ceiling["gates"] != ceiling["gates_before"]
    before, after = ceiling["after_regression"]["table"], ceiling["final"]["table"]
    assert after["copy_vision_own"]["mean"] != before["copy_vision_own"]["mean"]  # read through the new blocks
    kept = loaded.resampler.state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in trained.resampler.state_dict().items())  # the vision path: as saved
    with pytest.raises(ValueError, match="divide"):
        distill.DistillConfig(slots_per_line=5)
    with pytest.raises(ValueError, match="e2e_memory"):
        distill.DistillConfig(e2e_memory="text")


def test_the_teacher_stopped_and_resumed_is_the_run_never_stopped(lm, tiny_tokenizer, tmp_path):
    """Issue 24: 2 x 4 steps with a stop between end where 8 straight steps end, bit for bit."""
    from gistify_bench.train import teacher as vist_teacher

    flags = [*("--steps", "8", "--lr", "1e-2", "--batch", "2", "--layer", "1", "--xattn-layers", "1,3"),
             *("--distant-tokens", "96", "--proximal-tokens", "24", "--eval-n", "2", "--eval-every", "4"),
             *("--copy-steps", "2", "--cache", str(tmp_path), "--no-progress", "--save-every", "0")]  # fmt: skip
    straight, t1 = vist_teacher.run(vist_teacher.parse([*flags, "--out", str(tmp_path / "a")]), lm, tiny_tokenizer,
                                    corpus())  # fmt: skip
    b = [*flags, "--out", str(tmp_path / "b"), "--resume"]
    first, _ = vist_teacher.run(vist_teacher.parse([*b, "--stop-at-step", "4"]), lm, tiny_tokenizer, corpus())
    assert first["stopped"] == 4 and (tmp_path / "b" / "checkpoint.pt").is_file()
    resumed, t2 = vist_teacher.run(vist_teacher.parse(b), lm, tiny_tokenizer, corpus())
    assert resumed["stopped"] is None and resumed["curve"] == straight["curve"]
    s1, s2 = t1.trained_state(), t2.trained_state()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    with pytest.raises(ValueError, match="another configuration"):
        vist_teacher.run(vist_teacher.parse([*b, "--lr", "5e-3"]), lm, tiny_tokenizer, corpus())


def test_the_distillation_stopped_in_each_phase_and_resumed_is_the_run_never_stopped(lm, tiny_tokenizer, tmp_path):
    """Issue 24: a run stopped in the regression and again in the end-to-end phase, then resumed, ends with the
    weights and curves of the run never stopped; the frozen reader (the default) keeps its gates."""
    from safetensors.torch import save_file

    from gistify_bench.train import distill
    from gistify_bench.train import teacher as vist_teacher

    teacher = vist_teacher.Teacher(lm, vist_teacher.TeacherConfig(layer=1, xattn_layers="1,3", gate=0.5))
    saved = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.trained_state().items()}, str(saved))
    flags = [*("--teacher", str(saved), "--layer", "1", "--xattn-layers", "1,3", "--steps", "6", "--batch", "2"),
             *("--lr", "3e-3", "--depth", "1", "--distant-tokens", "96", "--proximal-tokens", "24", "--eval-n", "2"),
             *("--eval-every", "3", "--e2e-steps", "4", "--e2e-batch", "2", "--e2e-lr", "1e-2", "--warmup", "2"),
             *("--train-windows", "8", "--context-layers", "1", "--save-every", "0", "--loss", "kv"),
             *("--cache", str(tmp_path), "--no-progress")]  # fmt: skip
    straight, m1 = distill.run(distill.parse([*flags, "--out", str(tmp_path / "a")]), lm, tiny_tokenizer, corpus(),
                               FakeEncoder())  # fmt: skip
    b = [*flags, "--out", str(tmp_path / "b"), "--resume"]
    for stop in ("4", "8"):  # in the regression, then in the end-to-end phase
        part, _ = distill.run(distill.parse([*b, "--stop-at-step", stop]), lm, tiny_tokenizer, corpus(), FakeEncoder())
        assert part["stopped"] == int(stop)
    resumed, m2 = distill.run(distill.parse(b), lm, tiny_tokenizer, corpus(), FakeEncoder())
    assert resumed["stopped"] is None
    assert resumed["regression"] == straight["regression"] and resumed["end_to_end"] == straight["end_to_end"]
    s1, s2 = m1.trained_state(), m2.trained_state()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert straight["gates"] == straight["gates_before"] == [0.5, 0.5]  # the reader stayed as the teacher left it
    assert straight["final"]["table"]["copy_none"] == straight["after_regression"]["table"]["copy_none"]
    # the vision path alone: a checkpoint that a later run starts from, refused as a model
    part = m2.save(tmp_path / "vision.safetensors", {"llm": None}, dtype=torch.float32, parts=("resampler", "context"))
    with pytest.raises(VistWeightsError, match="training checkpoint"):
        VistModel.from_pretrained(part, lm=lm, tokenizer=tiny_tokenizer, encoder=FakeEncoder())
    start = [*flags, "--out", str(tmp_path / "c"), "--init", str(part), "--steps", "0", "--e2e-steps", "0"]
    again, m3 = distill.run(distill.parse(start), lm, tiny_tokenizer, corpus(), FakeEncoder())
    assert torch.equal(m3.context.blocks[0].qkv.weight, m2.context.blocks[0].qkv.weight)
    assert again["final"]["table"]["copy_vision_own"] == straight["final"]["table"]["copy_vision_own"]


@pytest.mark.real
def test_the_committed_teacher_and_vision_checkpoint_load_into_vist():
    """Issue 24: the weights a later run starts from are in the repository (bfloat16, under 30 MB each): the
    teacher's blocks (the distillation's default teacher) and the vision path of the last run, on the embedded
    SmolLM2, in the configuration their card records."""
    from pathlib import Path

    from safetensors.torch import load_file

    from gistify.models import load
    from gistify.vist.config import card_path
    from gistify_bench.train import distill
    from gistify_bench.train.teacher import Teacher, TeacherConfig, _load_init

    vision = (
        Path(__file__).resolve().parents[1] / "docs" / "results" / "vist" / "checkpoints" / "vision-issue24.safetensors"
    )
    for path in (distill.COMMITTED_TEACHER, vision):
        assert path.is_file() and path.stat().st_size < 30e6, path
    lm, tokenizer = load()
    teacher = Teacher(lm.float(), TeacherConfig())
    assert _load_init(teacher, str(distill.COMMITTED_TEACHER)) == ["xattn"]
    card = json.loads(card_path(vision).read_text())
    model = VistModel(lm, tokenizer, VistConfig.from_dict(card["config"]))
    state = load_file(str(vision))
    model.load_trained(state, tuple(card["parts"]))
    assert card["parts"] == ["resampler", "context"] and model.config.context_layers == 2
    assert torch.equal(model.context.blocks[0].qkv.weight, state["context.blocks.0.qkv.weight"].float())


def test_device_flags_are_checked_before_anything_loads_and_batches_move_whole(capsys):
    """Issue 24 item 7: --device on the trainers; a device this machine lacks is a one-line error at parse time,
    and a batch (ids, masks, vist's Pages) moves with every tensor in it."""
    from gistify.vist.memory import Pages
    from gistify_bench.device import to_device
    from gistify_bench.train import distill
    from gistify_bench.train import teacher as vist_teacher

    assert distill.parse(["--device", "cpu"]).device == "cpu"
    for parse in (distill.parse, vist_teacher.parse):  # the parser's one-line error, as a user sees it
        with pytest.raises(SystemExit):
            parse(["--device", "tpu0"])
        assert "--device must be cpu, cuda or cuda:N, got 'tpu0'" in capsys.readouterr().err
        if not torch.cuda.is_available():
            with pytest.raises(SystemExit):
                parse(["--device", "cuda"])
            assert "sees no CUDA device; use --device cpu" in capsys.readouterr().err
    pages = Pages(torch.zeros(1, 4, 3), torch.ones(1, 4, dtype=torch.bool), torch.ones(2, dtype=torch.bool))
    batch = {"pages": [pages], "ids": (torch.zeros(1, 2, dtype=torch.int64), torch.ones(1, 2)), "n": 3}
    moved = to_device(batch, torch.device("cpu"))
    assert isinstance(moved["pages"][0], Pages) and moved["pages"][0].positions is None and moved["n"] == 3
    assert isinstance(moved["ids"], tuple) and moved["ids"][0].dtype == torch.int64


def test_the_report_pairs_vist_with_the_control_trained_the_same_way():
    """Issue 24: two distillation runs alike but for the memory trained end to end give a paired table of vist
    against the mean-pooled control, with each run's LM loss at its start and end."""
    from gistify_bench.eval.report.vist import control_lines

    def run(memory: str, values: list[float], lm: float) -> dict:
        config = {"e2e_memory": memory, "e2e_blocks": "trained", "e2e_steps": 2, "init": "w", "seed": 0, "eval_n": 3}
        per_window = {f"{kind}_{memory}_own": values for kind in ("copy", "continuation")}
        return {"config": config, "final": {"per_window": per_window}, "end_to_end": [{"lm": lm}, {"lm": lm - 1}]}

    runs = {"v": run("vision", [1.0, 2.0, 3.0], 3.0), "m": run("mean_embedding", [1.5, 2.5, 3.5], 5.0)}
    text = "\n".join(control_lines(runs))
    assert "| copy | -0.500 [-0.500, -0.500], 100% |" in text and "| continuation | -0.500" in text
    assert "The control's LM loss, mean of the first and last 10 end-to-end steps: 4.500 -> 4.500." in text
    runs["m"]["config"]["e2e_steps"] = 3  # trained otherwise: not paired
    assert control_lines(runs) == []
