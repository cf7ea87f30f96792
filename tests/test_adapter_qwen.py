"""gistify.reduce on Qwen2.5-VL: a tiny random-weight Qwen2_5_VLForConditionalGeneration built from its config
(no download), prompts written by hand the way the processor writes them (<|vision_start|>, one <|image_pad|>
per merged token, <|vision_end|>; pixel_values as flattened patches in merge-block order; mm_token_type_ids).

Run: OMP_NUM_THREADS=1 python -m pytest -q tests/test_adapter_qwen.py
"""

from __future__ import annotations

import pytest
import torch

from gistify import Budget, reduce
from gistify.vision.adapters.qwen2_5_vl import Qwen2_5_VLAdapter, block_stats, extra_positions, to_raster, window_order

IMG, VIDEO, START, END, PAD = 90, 93, 91, 92, 0
PATCH_DIM = 3 * 2 * 14 * 14  # channels x temporal patch x patch x patch: one row of pixel_values
GRIDS = {"wide": (1, 8, 12), "square": (1, 8, 8)}  # image_grid_thw in patches: 24 and 16 merged tokens

METHODS = [
    ("recover", {}),
    ("random", {}),
    ("pool", {}),
    ("fastv", {"layer": 1}),  # the tiny LLM has 2 layers
    ("visionzip", {}),
    ("prumerge", {}),
    ("tome", {}),
    ("reinforce", {}),
]


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread


@pytest.fixture(scope="module")
def model():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=4,
            out_hidden_size=48,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,  # windows of 2 x 2 merged tokens: the window permutation is not the identity
            fullatt_block_indexes=[1],  # the last block attends over the whole image, as in the checkpoints
        ),
        text_config=dict(
            vocab_size=100,
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 2, 2]},
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=PAD,
        ),
        image_token_id=IMG,
        video_token_id=VIDEO,
        vision_start_token_id=START,
        vision_end_token_id=END,
    )
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = PAD
    return model


def sample(grid: str, seed: int, question=(7, 8, 9)) -> dict:
    t, h, w = GRIDS[grid]
    g = torch.Generator().manual_seed(seed)
    ids = [5, 6, START] + [IMG] * (t * h * w // 4) + [END, *question]
    return {
        "input_ids": torch.tensor([ids]),
        "pixel_values": torch.randn(t * h * w, PATCH_DIM, generator=g),
        "image_grid_thw": torch.tensor([[t, h, w]]),
    }


def batch(*samples: dict) -> dict:
    """Left-padded, as generate wants; the attention mask and mm_token_type_ids as the processor returns them."""
    width = max(s["input_ids"].shape[1] for s in samples)
    ids = torch.full((len(samples), width), PAD)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for b, s in enumerate(samples):
        n = s["input_ids"].shape[1]
        ids[b, width - n :], mask[b, width - n :] = s["input_ids"][0], 1
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "mm_token_type_ids": (ids == IMG).int(),
        "pixel_values": torch.cat([s["pixel_values"] for s in samples]),
        "image_grid_thw": torch.cat([s["image_grid_thw"] for s in samples]),
    }


@pytest.fixture(scope="module")
def one():
    return batch(sample("wide", 0))


def greedy(model, inputs, n=4):
    return model.generate(**inputs, max_new_tokens=n, do_sample=False)


def lm_inputs(model, call):
    """What the language model receives during `call()`: its position_ids and inputs_embeds."""
    seen = {}

    def grab(module, args, kwargs):
        seen.setdefault("position_ids", kwargs["position_ids"])
        seen.setdefault("inputs_embeds", kwargs["inputs_embeds"])

    handle = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        call()
    finally:
        handle.remove()
    return seen


def expected_positions(full: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, reductions) -> torch.Tensor:
    """(3, L'_b) what one sample's shortened prompt must read: the full prompt's positions (3, L) of its text
    tokens, and per image those of its kept slots, then of the raster slots after the last kept one."""
    columns, image, col = [], 0, 0
    while col < len(ids):
        if not mask[col]:
            col += 1
        elif ids[col] != IMG:
            columns.append(torch.tensor([col]))
            col += 1
        else:
            red = reductions[image]
            last = int(red.kept[-1]) if len(red.kept) else -1  # recover may merge everything into appended tokens
            slots = torch.cat([red.kept, extra_positions(red.n_in, last, red.n_out - len(red.kept))])
            columns.append(col + slots)
            image, col = image + 1, col + red.n_in
    return full[:, torch.cat(columns)]


# -- identity ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, opts", METHODS)
def test_keep_one_reproduces_the_model(model, one, name, opts):
    with torch.no_grad():
        reference = model(**one).logits
        with reduce(model, name, keep=1.0, **opts) as r:
            logits = model(**one).logits
    assert r.tokens_out == r.tokens_in == [24]
    torch.testing.assert_close(logits, reference, atol=1e-6, rtol=0)


def test_keep_one_generates_the_same(model):
    inputs = batch(sample("wide", 0), sample("square", 1, question=(7, 8, 9, 10, 11)))
    reference = greedy(model, inputs)
    with reduce(model, "recover", keep=1.0):
        out = greedy(model, inputs)
    assert torch.equal(out, reference)


# -- every method generates, and the sequence and cache shrink by what was dropped ------------------------------


DYNAMIC = [("recover", {}), ("recover", {"mode": "code"}), ("prumerge", {}), ("reinforce", {})]  # own budget rule
BUDGETS = [(name, opts, keep) for name, opts in METHODS for keep in (0.5, 0.1)]


@pytest.mark.parametrize("name, opts, keep", BUDGETS + [(name, opts, None) for name, opts in DYNAMIC])
def test_generate_and_shrink(model, one, name, opts, keep):
    with reduce(model, name, keep=keep, **opts) as r:
        out = greedy(model, one, n=3)
        prompt = model(**one, use_cache=True)
    n, k = r.tokens_in[0], r.tokens_out[0]
    assert 1 <= k < n
    if keep is not None:  # the budget exactly, or (pooling) the largest grid within it
        assert k == Budget(keep=keep).target(n) or (name == "pool" and k < Budget(keep=keep).target(n))
    length = one["input_ids"].shape[1]
    assert out.shape == (1, length + 3) and torch.equal(out[:, :length], one["input_ids"])  # the user's prompt
    assert r.inputs["input_ids"].shape[1] == length - (n - k)
    assert int((r.inputs["input_ids"] == IMG).sum()) == k
    assert prompt.logits.shape[1] == length - (n - k)
    assert prompt.past_key_values.get_seq_length() == length - (n - k)


# -- positions ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, opts", [("random", {}), ("recover", {}), ("pool", {}), ("visionzip", {})])
def test_positions_are_the_original_ones(model, name, opts):
    inputs = batch(sample("wide", 0), sample("square", 1, question=(7, 8, 9, 10, 11)))
    full, full_deltas = model.model.get_rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        inputs["image_grid_thw"],
        attention_mask=inputs["attention_mask"],
    )
    with reduce(model, name, keep=0.3, **opts) as r:
        seen = lm_inputs(model, lambda: model(**inputs))
        deltas = model.model.rope_deltas
    positions, short = seen["position_ids"], r.inputs
    assert positions.shape == (3, *short["input_ids"].shape)
    for b in range(2):
        ids, mask = inputs["input_ids"][b], inputs["attention_mask"][b].bool()
        expected = expected_positions(full[:, b], ids, mask, r.reductions[b])
        real = short["attention_mask"][b].bool()
        assert torch.equal(positions[:, b, real], expected)
        # the next token goes where it would without reduction: the prompt's max + 1
        assert int(deltas[b]) == int(full_deltas[b]) + (int(mask.sum()) - int(real.sum()))


def test_appended_tokens_follow_the_last_kept_slot():
    assert extra_positions(24, 10, 3).tolist() == [11, 12, 13]
    assert extra_positions(24, 22, 3).tolist() == [23, 23, 23]  # the raster runs out: the last slot again
    assert extra_positions(24, -1, 2).tolist() == [0, 1]


def test_decode_without_positions_uses_rope_deltas(model, one):
    """A decode step that gives no position ids (manual decoding from r.inputs) lands where generate puts it, at
    the prompt's max + 1. (Without an attention mask: transformers 5.23 mis-sizes the positions it derives from
    one in this path, with or without gistify.)"""
    step = {}
    with torch.no_grad(), reduce(model, "random", keep=0.3):
        for explicit in (False, True):
            seen = lm_inputs(model, lambda: step.update(prompt=model(**one, use_cache=True)))
            prompt = step["prompt"]
            kwargs = dict(input_ids=prompt.logits[:, -1:].argmax(-1), past_key_values=prompt.past_key_values)
            if explicit:
                kwargs["position_ids"] = (seen["position_ids"].amax() + 1).view(1, 1, 1).expand(3, 1, 1)
            step[explicit] = model(**kwargs).logits
    torch.testing.assert_close(step[False], step[True], atol=1e-6, rtol=0)


# -- batches --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, keep, opts", [("random", [0.5, 0.25], {}), ("recover", None, {}), ("tome", [0.3, 0.6], {})]
)
def test_batch_matches_one_by_one(model, name, keep, opts):
    samples = [sample("wide", 0), sample("square", 1, question=(7, 8, 9, 10, 11))]
    inputs = batch(*samples)
    with reduce(model, name, keep=keep, **opts) as r:
        together = greedy(model, inputs)
        counts = r.tokens_out
    assert counts[0] != counts[1] or name == "recover"  # the samples keep different numbers of tokens
    width = inputs["input_ids"].shape[1]
    for b, s in enumerate(samples):
        alone_inputs = batch(s)
        with reduce(model, name, keep=keep[b] if keep else None, **opts) as r:
            alone = greedy(model, alone_inputs)
        assert r.tokens_out == [counts[b]]
        n = alone_inputs["input_ids"].shape[1]
        assert torch.equal(together[b, width:], alone[0, n:])


def test_two_images_in_one_prompt(model):
    """Each image is reduced on its own; the text between and after them keeps its positions."""
    a, b = sample("wide", 0), sample("square", 1)
    ids = torch.cat([a["input_ids"], b["input_ids"][:, 2:]], dim=1)  # image, text, image, text
    inputs = batch(
        {
            "input_ids": ids,
            "pixel_values": torch.cat([a["pixel_values"], b["pixel_values"]]),
            "image_grid_thw": torch.cat([a["image_grid_thw"], b["image_grid_thw"]]),
        }
    )
    full, _ = model.model.get_rope_index(ids, inputs["mm_token_type_ids"], inputs["image_grid_thw"])
    with reduce(model, "pool", keep=0.25) as r:
        out = greedy(model, inputs, n=2)
        seen = lm_inputs(model, lambda: model(**inputs))
    assert [red.n_in for red in r.reductions[0]] == [24, 16]
    expected = expected_positions(full[:, 0], ids[0], torch.ones_like(ids[0]), r.reductions[0])
    assert torch.equal(seen["position_ids"][:, 0], expected)
    assert r.inputs["input_ids"].shape[1] == ids.shape[1] - sum(red.n_in - red.n_out for red in r.reductions[0])
    assert out.shape[1] == ids.shape[1] + 2


# -- what the methods read --------------------------------------------------------------------------------------


def test_context_fields(model, one):
    adapter = Qwen2_5_VLAdapter(model)
    (ctx,) = adapter.encode(one, frozenset({"cls_attention", "keys"}))
    features = model.model.get_image_features(one["pixel_values"], one["image_grid_thw"]).pooler_output[0]
    torch.testing.assert_close(ctx.features, features)  # exactly what the model scatters into the prompt
    assert ctx.visual_states is ctx.features and ctx.grid == (4, 6)
    assert ctx.keys.shape == (24, 32) and ctx.cls_attention.shape == (24,)
    # the last block attends over the whole image: what the patches receive sums to 1 over its tokens
    torch.testing.assert_close(ctx.cls_attention.sum(), torch.tensor(1.0))


def test_cls_attention_analogue_is_the_models_own_attention(model, one, monkeypatch):
    """The attention the adapter recomputes is what the last vision block computes: captured from the model's
    eager attention (which the block otherwise discards), summed over each token's patches."""
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen

    captured = []

    def eager(module, *args, **kwargs):
        out, weights = original(module, *args, **kwargs)
        if module is model.model.visual.blocks[-1].attn:
            captured.append(weights)  # (1, H, n, n) per attention segment
        return out, weights

    original = qwen.eager_attention_forward
    monkeypatch.setattr(qwen, "eager_attention_forward", eager)
    monkeypatch.setattr(model.model.visual.config, "_attn_implementation", "eager")
    (ctx,) = Qwen2_5_VLAdapter(model).encode(one, frozenset({"cls_attention"}))
    (weights,) = captured  # one segment: the whole image
    received = weights[0].float().mean(dim=(0, 1))  # (S,) per patch, window order
    order = window_order(model.model.visual, one["image_grid_thw"])
    torch.testing.assert_close(ctx.cls_attention, to_raster(received, order, 4) * 4)
    # computed a few queries at a time, the same numbers
    block = {}
    hook = model.model.visual.blocks[-1].attn.register_forward_pre_hook(
        lambda m, args, kwargs: block.update(hidden=args[0], **kwargs), with_kwargs=True
    )
    try:
        model.model.get_image_features(one["pixel_values"], one["image_grid_thw"])
    finally:
        hook.remove()
    block["rope"] = block["position_embeddings"]
    whole, chunked = (
        block_stats(model.model.visual, block, True)[1],
        block_stats(model.model.visual, block, True, 50)[1],
    )
    torch.testing.assert_close(whole, chunked)


def test_window_order_is_undone_as_the_merger_does(model, one):
    """to_raster maps per-patch values from the tower's window order to the tokens' order: the merger applied to
    the block states captured in window order, reordered by it, gives the model's features."""
    visual = model.model.visual
    seen = {}
    handle = visual.merger.register_forward_pre_hook(lambda m, args: seen.setdefault("h", args[0]))
    try:
        features = model.model.get_image_features(one["pixel_values"], one["image_grid_thw"]).pooler_output[0]
    finally:
        handle.remove()
    order = window_order(visual, one["image_grid_thw"])
    assert not torch.equal(order, torch.arange(len(order)))
    merged = visual.merger(seen["h"]).repeat_interleave(4, dim=0)  # one row per patch, in window order
    torch.testing.assert_close(to_raster(merged, order, 4), features)


def test_notes_say_what_is_an_analogue(model, one):
    with reduce(model, "recover", keep=0.3) as r:
        model(**one)
    notes = " ".join(r.notes)
    assert "no [CLS]" in notes and "§2.5" in notes and "keys before RoPE" in notes and "M-RoPE" in notes
    assert "text guidance is an analogue" in notes


# -- errors and cleanup -----------------------------------------------------------------------------------------


def test_mismatched_prompt_is_refused(model, one):
    bad = dict(one, input_ids=one["input_ids"][:, 1:], attention_mask=one["attention_mask"][:, 1:])
    bad["input_ids"] = bad["input_ids"].clone()
    bad["input_ids"][0, 3] = 7  # one placeholder fewer than the image's tokens
    with reduce(model, "random", keep=0.5), pytest.raises(ValueError, match="image tokens"):
        model(**bad)


def test_videos_are_refused(model, one):
    with reduce(model, "random", keep=0.5), pytest.raises(ValueError, match="videos"):
        model(**one, pixel_values_videos=torch.zeros(4, PATCH_DIM), video_grid_thw=torch.tensor([[2, 2, 2]]))


def test_hooks_are_gone_after_the_block(model, one):
    reference = greedy(model, one)
    deltas, attention = model.model.rope_deltas, model.config.text_config._attn_implementation
    with pytest.raises(RuntimeError, match="boom"):
        with reduce(model, "fastv", keep=0.3, layer=1):
            assert "generate" in vars(model)
            greedy(model, one)
            assert not torch.equal(model.model.rope_deltas, deltas)
            raise RuntimeError("boom")
    assert "generate" not in vars(model)
    for module in model.modules():
        assert not module._forward_pre_hooks and not module._forward_hooks
    assert model.model.rope_deltas is deltas and model.config.text_config._attn_implementation == attention
    assert torch.equal(greedy(model, one), reference)
