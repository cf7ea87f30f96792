"""The generated question-dependent tasks (gistify_bench.vlm.scenes), the VLM's position channels, the ground-truth
control and the paired comparison of the generated tasks' cells. The encoder is the real EfficientNet-Lite0; the
LLM is a tiny random Llama."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import gistify
from conftest import tiny_llama
from gistify_bench.vlm import efficientnet, scenes
from gistify_bench.vlm.model import GRID, POSITION_CHANNELS, GistVLM, architecture, position_code

pytestmark = pytest.mark.usefixtures("one_thread")
N = GRID * GRID


@pytest.fixture(scope="module")
def vlm(tiny_tokenizer):
    lm = tiny_llama(tiny_tokenizer, num_hidden_layers=2)
    return GistVLM(lm, tiny_tokenizer, lora_rank=4, lora_targets=("k_proj", "q_proj"), positions=True).eval()


def test_generated_examples_are_deterministic_and_split_apart():
    for task in scenes.TASKS:
        a, b = scenes.examples(task, "test", 5, seed=1), scenes.examples(task, "test", 5, seed=1)
        assert [(e.question, e.answer, e.box) for e in a] == [(e.question, e.answer, e.box) for e in b]
        assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))
        train = scenes.examples(task, "train", 5, seed=1)
        assert not any(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x in a for y in train)
    with pytest.raises(ValueError, match="split must be one of"):
        scenes.examples("scenes", "val", 1)
    with pytest.raises(ValueError, match="unknown generated task"):
        scenes.examples("shapes", "test", 1)


def test_questions_name_one_object_and_chance_is_low():
    for task in scenes.TASKS:
        data = scenes.examples(task, "dev", 300, seed=0)
        assert {e.answer for e in data} <= set(scenes.answers(task))
        c = scenes.chance(data)
        # four distinct values of the asked attribute per image: guessing among them is right one time in four
        assert c["among_objects"] == 0.25 and c["commonest_answer"] < 0.2
        assert all(len(set(e.choices)) == 4 and e.answer in e.choices for e in data)
    kinds = {e.qtype for e in scenes.examples("scenes", "dev", 100, seed=0)}
    assert kinds == {"color->shape", "shape->color", "position->shape", "position->color"}


def test_the_asked_object_lies_in_its_box_and_cells():
    """Every pixel of the asked object's colour lies inside its box; its cells are 3-25 of the 196 (44-60 px)."""
    for e in scenes.examples("scenes", "dev", 40, seed=2):
        color = e.answer if e.qtype.endswith("color") else e.question.split("the ")[1].split()[0]
        if color not in scenes.COLORS:  # "what shape is at the top left?" names no colour
            continue
        rgb = np.asarray(e.image).astype(int)
        ys, xs = np.nonzero(np.abs(rgb - scenes.COLORS[color]).sum(-1) == 0)
        x0, y0, x1, y1 = e.box
        assert len(xs) > 100 and xs.min() >= x0 and xs.max() <= x1 and ys.min() >= y0 and ys.max() <= y1
        cells = e.target.view(GRID, GRID)
        assert 3 <= int(cells.sum()) <= 25 and cells[(y0 + y1) // 32, (x0 + x1) // 32]


def test_position_channels_ride_with_the_tokens(vlm):
    code = position_code(GRID, GRID)
    assert code.shape == (N, POSITION_CHANNELS) and len(code.unique(dim=0)) == N  # every cell its own code
    ex = scenes.examples("scenes", "dev", 2, seed=0)
    x = vlm.inputs([e.image for e in ex], [e.question for e in ex])
    feats = vlm.encode(x.pixel_values)
    assert feats.shape == (2, N, efficientnet.WIDTH + POSITION_CHANNELS) and torch.equal(feats[1, :, -16:], code)
    with torch.no_grad(), gistify.reduce(vlm, "random", keep=0.25) as r:
        vlm.generate(x.pixel_values, x.input_ids, x.attention_mask, max_new_tokens=1)
    kept = r.reductions[0][0].kept
    assert torch.equal(r.reductions[0][0].tokens[:, -16:], code[kept])  # a kept token still says where it was
    state = vlm.trained_state()
    assert any(k.startswith("position_proj.") for k in state)
    assert architecture(state) == {"lora_rank": 4, "lora_targets": ("k_proj", "q_proj"), "positions": True,
                                   "relevance": False}  # fmt: skip


def test_relevance_channel_starts_silent_and_follows_the_question(tiny_tokenizer, vlm, tmp_path):
    """The relevance channel is z-scored per image, changes with the question and rides with kept tokens; its
    additive projection starts at 0 and its gate scales each projected token by sigmoid(2 s - 1) (fully open, the
    model answers exactly as the one it starts from); the answer loss reaches both; the weights say the model has it."""
    from gistify_bench.train.vlm import answer_batch, scene_batch, scene_pool

    lm = tiny_llama(tiny_tokenizer, num_hidden_layers=2)
    rel = GistVLM(lm, tiny_tokenizer, lora_rank=4, lora_targets=("k_proj", "q_proj"), positions=True, relevance=True)
    rel.load_trained(vlm.trained_state(), missing_ok=("relevance_proj", "relevance_gate"))
    rel.lm.load_state_dict(vlm.lm.state_dict())
    rel.eval()
    ex = scenes.examples("scenes", "dev", 2, seed=0)
    x = vlm.inputs([e.image for e in ex], [e.question for e in ex])
    feats = rel.encode(x.pixel_values)
    s = rel.relevance_channel(feats, x.input_ids, x.attention_mask)[..., 0]  # (2, N)
    with torch.no_grad():
        tokens = torch.cat([feats, s[..., None]], -1)
        torch.testing.assert_close(rel.project(tokens), vlm.project(feats) * torch.sigmoid(2 * s - 1)[..., None])
        a = vlm(x.pixel_values, x.input_ids, x.attention_mask).logits
        rel.relevance_gate.bias.fill_(30.0)  # the gate fully open
        b = rel(x.pixel_values, x.input_ids, x.attention_mask).logits
        rel.relevance_gate.bias.fill_(-1.0)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(s.mean(1), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(s.std(1), torch.ones(2), atol=1e-4, rtol=0)
    other = rel.prompt_ids([ex[1].question, ex[0].question])
    assert not torch.allclose(s, rel.relevance_channel(feats, *other)[..., 0])
    with torch.no_grad(), gistify.reduce(rel, "random", keep=0.25) as r:
        rel.generate(x.pixel_values, x.input_ids, x.attention_mask, max_new_tokens=1)
    kept = r.reductions[0][0].kept
    torch.testing.assert_close(r.reductions[0][0].tokens[:, -1], s[0, kept])  # a kept token keeps its relevance
    # the answer loss reaches the channel's projection; the weights say the model has it
    data = {t: scene_pool(rel, t, 4, 0, tmp_path, lambda m: None) for t in scenes.TASKS}
    answer_batch(rel, *scene_batch(data, 0, 4, 0)).backward()
    assert rel.relevance_proj.weight.grad.abs().sum() > 0 and rel.relevance_gate.weight.grad.abs().sum() > 0
    assert architecture(rel.trained_state())["relevance"] is True


def test_scene_batches_are_deterministic_and_read_cached_features(vlm, tmp_path):
    from gistify_bench.train.vlm import VLMTrainConfig, align_scenes, answer_batch, scene_batch, scene_pool

    data = {t: scene_pool(vlm, t, 6, 0, tmp_path, lambda m: None) for t in scenes.TASKS}
    assert all(f.shape == (6, N, efficientnet.WIDTH) and f.dtype == torch.bfloat16 for _, f in data.values())
    assert len(list((tmp_path / "features").glob("*.pt"))) == 2
    again = scene_pool(vlm, "scenes", 6, 0, tmp_path, lambda m: pytest.fail("re-encoded a cached pool"))
    assert torch.equal(again[1], data["scenes"][1])
    a, fa = scene_batch(data, 3, 4, 0)
    b, fb = scene_batch(data, 3, 4, 0)
    assert [e.question for e in a] == [e.question for e in b] and torch.equal(fa, fb)
    assert [e.kind for e in a] == ["labels", "scenes"] * 2
    asked = answer_batch(vlm, a, fa, asked_only=True)  # the ground-truth control's tokens only
    assert vlm.token_reducer is None and asked.item() > 0  # the seam is left as it was
    with pytest.raises(ValueError, match="asked_only needs --data scenes"):
        VLMTrainConfig(asked_only=True)
    with pytest.raises(ValueError, match="heads goes with init"):
        VLMTrainConfig(data="scenes", heads=__file__)
    with pytest.raises(ValueError, match="init: no weights at"):
        VLMTrainConfig(data="scenes", init=str(tmp_path / "none.safetensors"))
    loss = answer_batch(vlm, a, fa)
    assert not torch.isclose(loss, asked)
    loss.backward()
    assert loss.item() > 0 and vlm.position_proj.weight.grad is not None
    # stage 1 on the pools: the probe and question head move, the answer path does not
    before = {k: v.clone() for k, v in vlm.trained_state().items()}
    assert align_scenes(vlm, data, 2, 8, 0, lambda m: None) > 0
    after = vlm.trained_state()
    assert not torch.equal(after["probe.query"], before["probe.query"])
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith(("projector.", "lm.")))


def test_control_and_comparison_cells(vlm, tmp_path, monkeypatch):
    """The generated task's grid on the tiny VLM: the ground-truth control keeps exactly the asked object's cells,
    recover runs in both modes, and scenes.json pairs every cell with random at the same keep."""
    from gistify_bench.eval.runner import run
    from gistify_bench.eval.tasks import vqa as vqa_task

    monkeypatch.setattr(vqa_task, "load_vlm", lambda *a: vlm)
    cells = run("scenes", ["random", "recover-code", "oracle"], [0.25], 4, tmp_path, seed=1, show_progress=False)
    assert [(c["method"], c["keep"]) for c in cells] == [("none", 1.0), ("oracle", None), ("random", 0.25),
                                                         ("recover-code", 0.25)]  # fmt: skip
    d = tmp_path / "vision/scenes/gistvlm-scenes"
    recs = [json.loads(line) for line in (d / "oracle/keep=own/records.jsonl").read_text().splitlines()]
    truth = scenes.examples("scenes", "test", 4, seed=1)
    assert [r["tokens"] for r in recs] == [int(e.target.sum()) for e in truth]
    assert all(r["on_target"] == 1.0 and r["seconds"] > 0 for r in recs)
    full = json.loads((d / "none/keep=1/metrics.json").read_text())
    assert abs(full["on_target"] - sum(e.target.float().mean().item() for e in truth) / 4) < 1e-9
    table = json.loads((tmp_path / "vision/scenes.json").read_text())
    rows = {(r["method"], r["keep"]): r for r in table["cells"]}
    assert rows[("recover-code", 0.25)]["vs_random"]["n"] == 4 and "vs_random" not in rows[("random", 0.25)]
    assert rows[("oracle", None)]["vs_all_tokens"]["n"] == 4
    assert rows[("none", 1.0)]["kv_bytes"] > rows[("random", 0.25)]["kv_bytes"]
    from gistify_bench.eval.report.vision import write_scenes_report

    text = write_scenes_report(tmp_path / "vision")
    assert "## scenes" in text and "| oracle | own |" in text and "ground-truth control" in text
    assert (tmp_path / "vision/scenes.md").read_text() == text


def test_selection_alone_and_export(vlm, tmp_path):
    """The reducers' choice without answers (on_target, recall of the object's cells) and a checkpoint's weights
    exported in bfloat16 with the architecture they imply."""
    from safetensors.torch import load_file

    from gistify_bench.eval.tasks.vqa import selection
    from gistify_bench.train.vlm import export

    rows = selection(vlm, "labels", ["random", "recover-code"], [0.1], 2)
    assert [(r["method"], r["tokens"]) for r in rows] == [("random", 20.0), ("recover-code", 20.0)]
    assert all(0 <= r["on_target"] <= 1 and 0 <= r["recall"] <= 1 for r in rows)
    assert sum(rows[1]["visual_text_merged"]) == 20 and "visual_text_merged" not in rows[0]
    torch.save({"trained": vlm.trained_state(), "step": 7}, tmp_path / "checkpoint.pt")
    assert export(tmp_path / "checkpoint.pt", tmp_path / "w.safetensors") == 7
    state = load_file(tmp_path / "w.safetensors")
    assert all(v.dtype == torch.bfloat16 for v in state.values()) and architecture(state)["positions"]
