"""The small VLM (gistify_bench.vlm) and its adapter: the encoder is the real pretrained EfficientNet-Lite0 (from its
PyPI wheel); the LLM is a tiny random Llama (fast); the easy-vqa data are the real ones."""

from __future__ import annotations

import glob
import random

import numpy as np
import pytest
import torch

import gistify
from conftest import tiny_llama
from gistify_bench.vlm import efficientnet, vqa
from gistify_bench.vlm.model import GRID, GistVLM, contrastive_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread
METHODS = ("recover", "random", "pool", "fastv", "visionzip", "prumerge", "tome", "reinforce")
N = GRID * GRID


@pytest.fixture(scope="module")
def vlm(tiny_tokenizer):
    return GistVLM(tiny_llama(tiny_tokenizer, num_hidden_layers=3), tiny_tokenizer).eval()  # adds LoRA: its own


@pytest.fixture(scope="module")
def examples():
    return vqa.composites("dev", 2, seed=3) + vqa.singles("dev", 1, seed=3)


def test_encoder_is_the_pretrained_imagenet_network(monkeypatch):
    """Run the whole EfficientNet-Lite0 (stages 6-7, head, classifier from the same checkpoint) on matplotlib's
    photograph of Grace Hopper: ImageNet's "military uniform" (652) must come first, as it does for the
    reference network. A wrong padding, activation or block layout breaks this."""
    from PIL import Image

    monkeypatch.setattr(efficientnet, "STAGES", efficientnet.STAGES + ((6, 5, 2, 192, 4), (6, 3, 1, 320, 1)))
    net = efficientnet.EfficientNetLite0()
    head = torch.nn.Sequential(
        torch.nn.Conv2d(320, 1280, 1, bias=False), torch.nn.BatchNorm2d(1280, eps=1e-3), torch.nn.ReLU6()
    )
    fc = torch.nn.Linear(1280, 1000)
    state = torch.load(efficientnet.weights_path(), weights_only=True)
    net.load_state_dict({k: v for k, v in state.items() if k.startswith(("_conv_stem", "_bn0", "_blocks"))})
    head.load_state_dict(
        {
            "0.weight": state["_conv_head.weight"],
            **{
                f"1.{k}": state[f"_bn1.{k}"]
                for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
            },
        }
    )
    fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    net.eval(), head.eval()
    photo = glob.glob(str(__import__("matplotlib").get_data_path()) + "/sample_data/grace_hopper.jpg")[0]
    pixels = GistVLM.pixels([Image.open(photo)])
    with torch.no_grad():
        x = torch.nn.functional.relu6(net._bn0(net._conv_stem((pixels - net.mean) / net.std)))
        for block in net._blocks:
            x = block(x)
        logits = fc(head(x).mean((2, 3)))
    assert logits.argmax().item() == 652


def test_encoder_tokens_are_frozen_and_shaped(vlm, examples):
    pixels = GistVLM.pixels([e.image for e in examples])
    feats = vlm.encode(pixels)
    assert feats.shape == (3, N, efficientnet.WIDTH)
    assert not any(p.requires_grad for p in vlm.encoder.parameters())
    # the LLM's own weights are frozen; only its LoRA update (zero at the start) trains
    lora = vlm.lora_parameters()
    assert lora and all(p.requires_grad for p in lora.values())
    assert not any(p.requires_grad for n, p in vlm.lm.named_parameters() if n not in lora)
    assert all(not p.any() for n, p in lora.items() if n.endswith("lora_b"))
    # the last three channels are each cell's mean colour
    assert torch.allclose(feats[0, :, -3:], torch.nn.functional.avg_pool2d(pixels[0], 16).flatten(1).T, atol=1e-6)


def test_composites_ask_about_one_object_named_by_an_attribute():
    attrs = vqa.attributes("dev")
    assert len(attrs) > 300 and all(c in vqa.COLORS and s in vqa.SHAPES for c, s in attrs.values())
    ex = vqa.composites("dev", 40, seed=1)
    assert ex == vqa.composites("dev", 40, seed=1)  # deterministic
    assert {e.question.split()[1] for e in ex} == {"is", "color"}
    for e in ex:
        assert e.image.size == (128, 128) and e.target in range(4)
        assert e.answer in (vqa.COLORS if e.question.startswith("what color") else vqa.SHAPES)
    # splits do not share images
    train_ids = {i for _, _, i in vqa.questions("train")}
    assert not train_ids & {i for _, _, i in vqa.questions("dev")}


def test_correct_reads_the_first_word():
    assert vqa.correct("circle.", "circle") and vqa.correct("red shape", "red")
    assert not vqa.correct("a red", "red") and not vqa.correct("", "red")


def test_contrastive_loss_prefers_matching_pairs():
    image = torch.eye(4)
    match = torch.eye(4, dtype=torch.bool)
    good = contrastive_loss(image, image, match, torch.tensor(10.0))
    bad = contrastive_loss(image, image.roll(1, 0), match, torch.tensor(10.0))
    assert good < bad


def _inputs(vlm, examples):
    return vlm.inputs([e.image for e in examples], [e.question for e in examples])


def test_keep_all_reproduces_the_model_exactly(vlm, examples):
    x = _inputs(vlm, examples)
    with torch.no_grad():
        ref = vlm(x.pixel_values, x.input_ids, x.attention_mask).logits
        for method in METHODS:
            with gistify.reduce(vlm, method, keep=1.0) as r:
                got = vlm(x.pixel_values, x.input_ids, x.attention_mask).logits
            assert torch.equal(got, ref), method
            assert r.tokens_out == [N] * 3


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_generate_at_a_budget_shrinks_the_sequence(vlm, examples, method, keep):
    x = _inputs(vlm, examples)
    with gistify.reduce(vlm, method, keep=keep) as r:
        out = vlm.generate(x.pixel_values, x.input_ids, x.attention_mask, max_new_tokens=3)
        embeds, mask, _ = vlm.sequence(x)
    target = round(keep * N)
    assert out.shape[0] == 3 and out.shape[1] <= 3
    for got in r.tokens_out:
        assert got == target or (method == "pool" and got <= target)
    # each row holds its reduced visual tokens and its prompt, nothing else
    prompt = x.attention_mask.sum(1)
    assert mask.sum(1).tolist() == [k + int(p) for k, p in zip(r.tokens_out, prompt)]


def test_cache_shrinks_with_the_sequence(vlm, examples):
    x = _inputs(vlm, examples[:1])
    with torch.no_grad():
        full = vlm(x.pixel_values, x.input_ids, x.attention_mask, use_cache=True).past_key_values.get_seq_length()
        with gistify.reduce(vlm, "random", keep=0.1) as r:
            short = vlm(x.pixel_values, x.input_ids, x.attention_mask, use_cache=True).past_key_values
    assert full - short.get_seq_length() == N - r.tokens_out[0]


@pytest.mark.parametrize("method", ["recover", "random", "tome", "fastv"])
def test_batch_with_different_budgets_answers_as_one_by_one(vlm, examples, method):
    keeps = [0.5, 0.1, 0.25]
    x = _inputs(vlm, examples)
    with gistify.reduce(vlm, method, keep=keeps) as r:
        batched = vlm.generate(x.pixel_values, x.input_ids, x.attention_mask, max_new_tokens=3)
    assert len(set(r.tokens_out)) == 3
    for i, keep in enumerate(keeps):
        one = _inputs(vlm, examples[i : i + 1])
        with gistify.reduce(vlm, method, keep=keep):
            alone = vlm.generate(one.pixel_values, one.input_ids, one.attention_mask, max_new_tokens=3)
        assert torch.equal(batched[i], alone[0]), (method, i)


def test_recover_dynamic_and_question_guidance_read_the_trained_heads(vlm, examples):
    x = _inputs(vlm, examples[:2])
    with gistify.reduce(vlm, "recover") as r:
        vlm(x.pixel_values, x.input_ids, x.attention_mask)
    assert all(0 < k < N for k in r.tokens_out)
    assert any("probe" in n for n in r.notes) and any("question head" in n for n in r.notes)


def test_nothing_is_left_after_the_block(vlm, examples):
    x = _inputs(vlm, examples[:1])
    before = vlm(x.pixel_values, x.input_ids, x.attention_mask).logits
    with pytest.raises(RuntimeError, match="boom"):
        with gistify.reduce(vlm, "random", keep=0.1):
            raise RuntimeError("boom")
    assert vlm.token_reducer is None
    assert torch.equal(vlm(x.pixel_values, x.input_ids, x.attention_mask).logits, before)


def test_bad_inputs_get_clear_errors(vlm, examples):
    with pytest.raises(ValueError, match="one question per image"):
        vlm.inputs([examples[0].image], ["a?", "b?"])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        vlm.encode(torch.zeros(3, 224, 224))
    with pytest.raises(ValueError, match="no budget rule"):
        x = _inputs(vlm, examples[:1])
        with gistify.reduce(vlm, "random"):
            vlm(x.pixel_values, x.input_ids, x.attention_mask)


def test_trained_state_round_trips(vlm, tiny_tokenizer):
    state = {k: v + 0.01 for k, v in vlm.trained_state().items()}
    assert any(k.startswith("lm.") and "lora_a" in k for k in state)
    other = GistVLM(vlm.lm.__class__(vlm.lm.config), tiny_tokenizer, encoder=vlm.encoder)
    other.load_trained(state)
    assert all(torch.equal(state[k], v) for k, v in other.trained_state().items())


def test_training_batches_are_deterministic_and_mixed():
    from gistify_bench.train.vlm import training_examples

    a, b = training_examples(7, 8, 0), training_examples(7, 8, 0)
    assert [(e.question, e.answer) for e in a] == [(e.question, e.answer) for e in b]
    assert [e.kind for e in a] == ["single"] * 4 + ["composite"] * 4
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))
    random.seed(1)  # the global generator plays no part: a run resumed in a fresh process gets the same batch
    assert [(e.question, e.answer) for e in training_examples(7, 8, 0)] == [(e.question, e.answer) for e in a]
    # and each step, and each seed, has a batch of its own
    assert [(e.question, e.answer) for e in training_examples(8, 8, 0)] != [(e.question, e.answer) for e in a]
    assert [(e.question, e.answer) for e in training_examples(7, 8, 1)] != [(e.question, e.answer) for e in a]


@pytest.mark.real
def test_shipped_vlm_answers_held_out_questions():
    """The shipped weights answer held-out single-shape questions well above chance (its card records 0.81 on
    300; easy-vqa's answers are 13 words, yes/no the most common)."""
    from gistify_bench.vlm.model import WEIGHTS

    assert WEIGHTS.exists(), "the small VLM's weights ship with the package"
    model = GistVLM.from_pretrained(dtype=torch.bfloat16)
    ex = vqa.singles("test", 24, seed=5)
    preds = model.answer([e.image for e in ex], [e.question for e in ex])
    assert sum(vqa.correct(p, e.answer) for p, e in zip(preds, ex)) / len(ex) >= 0.6
    assert model.card()["held_out_accuracy"]["easyvqa"] > 0.7


def test_quadrant_cells_match_where_composites_paste_their_images():
    from gistify_bench.vlm.model import quadrant_cells

    cells = quadrant_cells().view(GRID, GRID)
    assert cells.flatten().bincount().tolist() == [N // 4] * 4
    # composite quadrant q is pasted at (64 * (q % 2), 64 * (q // 2)) of the 128-px canvas
    for q, (row, col) in enumerate([(0, 0), (0, GRID - 1), (GRID - 1, 0), (GRID - 1, GRID - 1)]):
        assert cells[row, col] == q


def test_vqa_cells_run_through_the_runner_resume_and_feed_the_report(vlm, tmp_path, monkeypatch):
    """The vision accuracy task on the tiny VLM: per-question records in the text tasks' cell layout, resumable, and
    accuracy.json (what the vision report reads) gathered from the cells."""
    import json

    from gistify_bench.eval import report
    from gistify_bench.eval.runner import run
    from gistify_bench.eval.tasks import vqa as vqa_task

    monkeypatch.setattr(vqa_task, "load_vlm", lambda *a: vlm)
    cells = run("easyvqa-4", ["random", "recover"], [0.5], 3, tmp_path, seed=1, show_progress=False)
    assert [(c["method"], c["keep"]) for c in cells] == [("none", 1.0), ("random", 0.5), ("recover", 0.5),
                                                         ("recover", None)]  # fmt: skip
    d = tmp_path / "vision/easyvqa-4/gistvlm"
    recs = [json.loads(line) for line in (d / "random/keep=0.5/records.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == ["1-0", "1-1", "1-2"] and all(r["tokens"] == N // 2 for r in recs)
    assert all(0 <= r["on_target"] <= 1 for r in recs) and (d / "recover/keep=own/metrics.json").is_file()
    none = json.loads((d / "none/keep=1/metrics.json").read_text())
    assert (
        none["tokens"] == N
        and none["on_target"] == 0.25
        and none["accuracy"]
        == sum(r["correct"] for r in map(json.loads, (d / "none/keep=1/records.jsonl").read_text().splitlines())) / 3
    )
    acc = json.loads((tmp_path / "vision/accuracy.json").read_text())
    assert acc["n"] == 3 and [(r["method"], r["keep"]) for r in acc["records"]][0] == ("none", 1.0)
    assert {(r["method"], r["keep"]) for r in acc["records"]} == {(c["method"], c["keep"]) for c in cells}
    # a second run computes nothing: every record is there
    monkeypatch.setattr(vqa_task.VQA, "evaluate", lambda *a: pytest.fail("recomputed a recorded cell"))
    run("easyvqa-4", ["random", "recover"], [0.5], 3, tmp_path, seed=1, show_progress=False)
    written = report.write(tmp_path)
    assert "vision" in written and "### easyvqa-4 (n = 3" in written["vision"][0].read_text()
