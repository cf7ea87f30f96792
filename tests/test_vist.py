"""vist's foundation: the frozen PP-OCRv6 encoder reads rendered prose back (real model, real text), its feature
cache, the Perceiver resampler, and the two ways into a Llama (cross-attention hooks, prefix): identity at zero
init, restoration, generation, and a training step that moves only the trainable parameters."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import CJK_FONT, missing, prose
from gistify.rendering import Layout, render
from gistify.vist.encoder import EncoderConfig, TextImageEncoder
from gistify.vist.inject import CrossAttentionConfig, PrefixProjector, VistCrossAttention
from gistify.vist.resampler import PerceiverResampler, ResamplerConfig, flatten_images

pytestmark = pytest.mark.usefixtures("one_thread")


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_error_rate(encoder, rendering) -> float:
    """Edit distance between what the encoder reads on each row and the row's text (blanks collapsed: CTC reads
    one space for any gap), over the characters of the text."""
    errors = chars = 0
    for row, read in zip(rendering.rows, encoder.read(rendering)):
        want = " ".join(rendering.text[row.span[0] : row.span[1]].split())
        errors += edit_distance(read, want)
        chars += len(want)
    return errors / chars


@pytest.fixture(scope="module")
def encoder():
    return TextImageEncoder()


# -- the frozen encoder -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, layout",
    [("astronaut.txt", Layout.line()), ("arithmetic_mean.txt", Layout.line()), ("ampere.txt", Layout.fold())],
    ids=["line-astronaut", "line-mean", "fold-ampere"],
)
def test_encoder_reads_rendered_prose_back(encoder, name, layout):
    text = prose(name)[:1400]
    r = render(text, layout)
    assert char_error_rate(encoder, r) < 0.01


def test_encoder_reads_code_and_cjk(encoder):
    code = 'def mean(xs: list[float]) -> float:\n    return sum(xs) / len(xs)  # {"n": 1}\n'
    r = render(code, Layout.line(font="DejaVuSansMono.ttf"))
    assert encoder.read(r)[:2] == ["def mean(xs: list[float]) -> float:", 'return sum(xs) / len(xs) # {"n": 1}']
    r = render("北京是中国的首都。東京は日本の首都です。", Layout.fold())
    if len(r.fonts) == 1:
        missing("a CJK font (DejaVu has no CJK glyphs)", CJK_FONT)
    assert encoder.read(r)[0] == "北京是中国的首都。東京は日本の首都です。"


def test_encoder_shapes_and_masks(encoder):
    r = render(prose()[:900], Layout.fold())
    e = encoder.encode(r)
    assert e.features.shape == (len(r), 16 * 96, 120) and e.features.dtype == torch.float32
    assert e.mask.shape == e.ids.shape == e.confidence.shape == (len(r), 16 * 96)
    # the mask follows the rows: text at the start of row 0, nothing on the blank rows after the end
    per_row = e.mask.reshape(len(r), 16, 96)
    assert per_row[0, 0, 0] and not per_row[-1, -1].any()
    assert (e.ids.reshape(len(r), 16, 96)[~per_row] > 0).float().mean() < 0.05  # masked tokens read blank
    lines = render(prose()[:300], Layout.line())
    b = TextImageEncoder(EncoderConfig(features="backbone")).encode(lines)
    assert b.features.shape == (len(lines), 96, 384)


def test_encoder_cache_is_keyed_by_content(encoder, tmp_path):
    text = prose("abacus.txt")[:400]
    r = render(text, Layout.line())
    cold = TextImageEncoder(EncoderConfig(cache_dir=str(tmp_path)))
    first = cold.encode(r)
    assert cold.stats["cached"] == 0 and cold.stats["images"] == len(r)
    again = cold.encode(render(text, Layout.line()))  # rendered anew: same pixels, same keys
    assert cold.stats["cached"] == len(r)
    assert torch.equal(first.features, again.features)
    fresh = TextImageEncoder(EncoderConfig(cache_dir=str(tmp_path)))  # a new process would find the files
    assert torch.equal(fresh.encode(r).features, first.features) and fresh.stats["cached"] == len(r)
    assert len(list(tmp_path.glob("*.npz"))) == len(r)
    uncached = TextImageEncoder(EncoderConfig(cache_mb=0))
    uncached.encode(r), uncached.encode(r)
    assert uncached.stats["cached"] == 0
    other = render(text, Layout.line(font_size=30))  # other settings, other keys
    cold.encode(other)
    assert cold.stats["cached"] == len(r)


# -- the resampler ------------------------------------------------------------------------------------------------

SMALL = ResamplerConfig(input_dim=12, dim=32, depth=2, heads=2, head_dim=8, latents=4, max_tokens=40)


def test_resampler_shapes_and_key_mask():
    torch.manual_seed(0)
    res = PerceiverResampler(SMALL)
    feats, mask = torch.randn(3, 40, 12), torch.ones(3, 40, dtype=torch.bool)
    mask[1, 25:] = False
    mask[2] = False
    out = res(feats, mask)
    assert out.tokens.shape == (3, 4, 32) and out.cls.shape == (3, 32)
    assert out.image_mask.tolist() == [True, True, False]
    changed = feats.clone()
    changed[1, 25:] = 100.0  # what the mask hides does not matter
    assert torch.allclose(res(changed, mask).tokens, out.tokens, atol=1e-6)
    no_cls = PerceiverResampler(
        ResamplerConfig(input_dim=12, dim=32, depth=1, heads=2, head_dim=8, latents=6, cls=False)
    )
    assert no_cls(feats).tokens.shape == (3, 6, 32) and no_cls(feats).cls is None
    with pytest.raises(ValueError, match="max_tokens"):
        res(torch.randn(1, 41, 12))


def test_features_are_standardised_with_the_corpus_statistics():
    torch.manual_seed(0)
    res = PerceiverResampler(SMALL)
    feats = torch.randn(2, 40, 12) * 3 + 30  # a large shared component, as PP-OCRv6's
    mean, std = torch.full((12,), 30.0), torch.full((12,), 3.0)
    plain = res((feats - mean) / std).tokens  # identity statistics until set
    res.set_feature_stats(mean, std)
    assert torch.allclose(res(feats).tokens, plain, atol=1e-5)
    assert torch.equal(res.state_dict()["feature_mean"], mean)  # saved with the weights
    with pytest.raises(ValueError, match="positive"):
        res.set_feature_stats(mean, torch.zeros(12))
    with pytest.raises(ValueError, match=r"\(12,\)"):
        res.set_feature_stats(torch.zeros(5), torch.ones(5))


def test_local_latents_read_only_their_own_stretch():
    torch.manual_seed(0)
    res = PerceiverResampler(dataclasses.replace(SMALL, depth=1, local=True))  # one block: nothing else leaks in
    feats = torch.randn(1, 40, 12)
    out = res(feats)
    changed = feats.clone()
    changed[0, 10:] = 5.0  # latent 0 reads tokens 0-9 (40 tokens / 4 latents)
    moved = res(changed)
    assert torch.allclose(moved.tokens[0, 0], out.tokens[0, 0], atol=1e-6)
    assert not torch.allclose(moved.tokens[0, 1:], out.tokens[0, 1:], atol=1e-3)
    assert not torch.allclose(moved.cls, out.cls, atol=1e-3)  # the CLS latent reads everything
    empty = torch.ones(1, 40, dtype=torch.bool)
    empty[0, :10] = False  # latent 0's stretch is blank: it sees only the latents, no NaN
    assert torch.isfinite(res(feats, empty).tokens).all()


def test_local_attention_computed_per_stretch_is_the_dense_masked_one():
    """Issue 24, item 5: the local resampler scores each latent against its own stretch and the latents only; the
    result and its gradients are the dense masked attention's (the CLS latent still reads everything)."""
    from gistify.vist.resampler import PerceiverAttention

    torch.manual_seed(0)
    attn = PerceiverAttention(16, heads=2, head_dim=8)
    m, length, n = 3, 24, 4  # 4 local latents of 6 tokens each, and a CLS latent
    x, latents = torch.randn(m, length, 16), torch.randn(m, n + 1, 16)
    mask = torch.rand(m, length) > 0.3
    mask[1, :6] = False  # a latent whose stretch is blank
    mask[2] = False  # a blank image
    own = (torch.arange(length) * n // length)[None, :] == torch.arange(n + 1)[:, None]
    own[-1] = True
    dense_mask = torch.cat([own[None] & mask[:, None], torch.ones(m, n + 1, n + 1, dtype=torch.bool)], dim=2)
    grads = []
    for key_mask, stretch in ((dense_mask, 0), (mask, length // n)):
        attn.zero_grad()
        out = attn(x, latents, key_mask, stretch)
        out.square().sum().backward()
        grads.append((out.detach(), attn.to_kv.weight.grad.clone(), attn.to_q.weight.grad.clone()))
    for dense, local in zip(*grads):
        assert torch.allclose(dense, local, atol=1e-5), (dense - local).abs().max()


def test_tokens_go_to_the_stretch_of_the_line_they_are_drawn_in():
    """Issue 13, step 4: the slot of a token is (line, stretch of 96 / k encoder tokens its middle is drawn in),
    x proportional to the character offset over the line's drawn text; pooled slots are the mean of their tokens."""
    import numpy as np

    from gistify.vist.slots import pool_slots, token_slots

    spans = np.array([[0, 40], [41, 51], [52, 52]])  # a full line, a short one (a quarter drawn), a blank one
    drawn = np.array([96, 24, 0])
    offsets = np.array([[0, 4], [18, 22], [36, 40], [40, 41], [41, 45], [47, 51], [51, 52]])
    slots = token_slots(offsets, spans, drawn, 96, 4)
    # line 0: x = 2/40, 20/40, 38/40 of 96 tokens -> stretches 0, 2, 3; the newline after it: the line's end;
    # line 1: 24 drawn tokens, all in stretch 0; the newline between lines 1 and 2: line 1's end
    assert slots.tolist() == [0, 2, 3, 3, 4, 4, 4]
    values = torch.arange(7, dtype=torch.float32)[:, None].repeat(1, 3)
    pooled, filled = pool_slots(values, torch.from_numpy(slots), 12)
    assert filled.tolist() == [True, False, True, True, True] + [False] * 7
    assert pooled[3].tolist() == [2.5] * 3 and pooled[4].tolist() == [5.0] * 3 and pooled[1].abs().sum() == 0
    with pytest.raises(ValueError, match="at least one line"):
        token_slots(offsets, np.zeros((0, 2)), np.zeros(0), 96, 4)


def test_resampler_on_real_features(encoder):
    r = render(prose()[:1200], Layout.fold())
    e = encoder.encode(r)
    out = PerceiverResampler(ResamplerConfig(dim=64, depth=1, latents=64))(e.features, e.mask)
    assert out.tokens.shape == (len(r), 64, 64) and torch.isfinite(out.tokens).all()
    memory, memory_mask = flatten_images(out.tokens, out.image_mask, [len(r)])
    assert memory.shape == (1, len(r) * 64, 64) and memory_mask.all()


def test_flatten_images_pads_and_masks():
    tokens = torch.randn(3, 4, 8)
    memory, mask = flatten_images(tokens, torch.tensor([True, False, True]), [1, 2])
    assert memory.shape == (2, 8, 8)
    assert mask.tolist() == [[True] * 4 + [False] * 4, [False] * 4 + [True] * 4]
    assert torch.equal(memory[1, 4:], tokens[2])


# -- injection into a Llama ---------------------------------------------------------------------------------------


def memory_for(model, images_per_sample=(2, 1), seed=0):
    torch.manual_seed(seed)
    res = PerceiverResampler(SMALL)
    out = res(torch.randn(sum(images_per_sample), 40, 12))
    return res, *flatten_images(out.tokens, out.image_mask, list(images_per_sample))


def ids_for(tokenizer, texts=("The aardwolf eats termites", "An abacus is a calculating tool")):
    tokenizer.padding_side = "left"
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.bos_token
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def test_gate_at_zero_keeps_exactly_the_llm_and_the_blocks_copy_the_layer(tiny_model, tiny_tokenizer):
    ids, mask = ids_for(tiny_tokenizer)
    with torch.no_grad():
        base = tiny_model(ids, attention_mask=mask).logits
        _, memory, memory_mask = memory_for(tiny_model)
        for config in (CrossAttentionConfig(), CrossAttentionConfig(out_init="zero", gate=None)):
            xattn = VistCrossAttention(tiny_model, config)
            with xattn.attach(tiny_model, memory, memory_mask):
                same = tiny_model(ids, attention_mask=mask).logits
            assert torch.equal(same, base)
    xattn = VistCrossAttention(tiny_model)
    assert len(xattn.blocks) == tiny_model.config.num_hidden_layers
    block, layer = xattn.blocks[0], tiny_model.model.layers[0]
    assert torch.equal(block.q_proj.weight, layer.self_attn.q_proj.weight)  # §3.4: q copied
    assert torch.equal(block.k_proj.weight, layer.self_attn.k_proj.weight)  # k, v whole: D_m = d_model
    assert torch.equal(block.o_proj.weight, layer.self_attn.o_proj.weight)  # CEPE's copy, behind the gate
    assert torch.equal(block.norm.weight, layer.post_attention_layernorm.weight)
    assert torch.equal(block.memory_norm.weight, layer.input_layernorm.weight)  # the memory normalised like keys


def test_blocks_are_float32_on_a_bfloat16_llm_and_every_part_learns_from_a_closed_gate(tiny_model, tiny_tokenizer):
    """Issue 13: bfloat16 weights and moments left most small updates unapplied; a zeroed o_proj gave q/k/v no
    gradient. Here the blocks are float32 on a bfloat16 LLM, and the gate, closed at step 0, is what opens."""
    import copy

    llm = copy.deepcopy(tiny_model).to(torch.bfloat16)
    ids, mask = ids_for(tiny_tokenizer)
    _, memory, memory_mask = memory_for(tiny_model)
    xattn = VistCrossAttention(llm)
    assert {p.dtype for p in xattn.parameters()} == {torch.float32}
    opt = torch.optim.AdamW(xattn.parameters(), lr=1e-2, weight_decay=0.0)
    for step in range(2):
        with xattn.attach(llm, memory.detach(), memory_mask):
            loss = llm(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        opt.zero_grad()
        loss.backward()
        block = xattn.blocks[0]
        if step == 0:  # only the gate has gradient while it is closed
            assert block.gate.grad.abs() > 0 and block.q_proj.weight.grad.abs().max() == 0
        else:
            assert block.q_proj.weight.grad.abs().max() > 0 and block.memory_norm.weight.grad.abs().max() > 0
        opt.step()
    assert all(p.grad is None for p in llm.parameters())


def test_memory_keys_get_the_llm_rotary_embedding_at_their_positions(tiny_model):
    """RoPE as the layer's self-attention applies it: the block's keys of a memory at positions p are the layer's
    own keys of the same states at p (transformers' apply_rotary_pos_emb), so [memory][text] reads with the
    geometry q_proj and k_proj were trained on."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from gistify.vist.inject import default_positions

    layer = tiny_model.model.layers[1]
    xattn = VistCrossAttention(tiny_model, CrossAttentionConfig(layers=(1,)))
    block, c = xattn.blocks[0], tiny_model.config
    states = torch.randn(2, 5, c.hidden_size)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    positions = default_positions(mask)
    assert positions.tolist() == [[-5, -4, -3, -2, -1], [-3, -2, -1, 0, 0]]
    cos, sin = tiny_model.model.rotary_emb(states, positions)
    with torch.no_grad():
        k, _ = block.keys_values(states, (cos, sin))
        hd = k.shape[-1]
        own = layer.self_attn.k_proj(layer.input_layernorm(states)).view(2, 5, -1, hd).transpose(1, 2)
        _, expected = apply_rotary_pos_emb(own, own, cos, sin)
    assert torch.allclose(k, expected, atol=1e-5)


def test_vist_cards_written_before_the_reader_fixes_load_without_them():
    from gistify.vist.config import VistConfig

    old = {k: v for k, v in VistConfig().to_dict().items() if k not in ("memory_norm", "gate", "rope")}
    old["out_init"] = "zero"
    legacy = VistConfig.from_dict(old)
    assert (legacy.memory_norm, legacy.gate, legacy.rope, legacy.out_init) == (False, None, False, "zero")
    assert VistConfig.from_dict(VistConfig().to_dict()) == VistConfig()
    with pytest.raises(ValueError, match="gate"):
        CrossAttentionConfig(gate=1.0)


def test_cross_attention_reads_memory_and_is_removed_after(tiny_model, tiny_tokenizer):
    ids, mask = ids_for(tiny_tokenizer)
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    flags = [p.requires_grad for p in tiny_model.parameters()]
    # transformers may keep hooks of its own on the shared model (output recording): compare, not expect none
    hooks = [
        (list(layer._forward_pre_hooks), list(layer.self_attn._forward_hooks)) for layer in tiny_model.model.layers
    ]
    _, memory, memory_mask = memory_for(tiny_model)
    xattn = VistCrossAttention(tiny_model, CrossAttentionConfig(out_init="normal", gate=0.5))  # the paper's o_proj
    with torch.no_grad():
        base = tiny_model(ids, attention_mask=mask).logits
        with xattn.attach(tiny_model, memory, memory_mask):
            read = tiny_model(ids, attention_mask=mask).logits
            no_memory = memory_mask.clone()
            no_memory[1] = False
        with xattn.attach(tiny_model, memory, no_memory):
            partly = tiny_model(ids, attention_mask=mask).logits
        with pytest.raises(RuntimeError, match="boom"), xattn.attach(tiny_model, memory, memory_mask):
            raise RuntimeError("boom")
        after = tiny_model(ids, attention_mask=mask).logits
    assert (read - base).abs().max() > 1e-3
    assert torch.equal(partly[1], base[1]) and not torch.equal(partly[0], base[0])  # a sample without memory
    assert torch.equal(after, base)
    assert hooks == [
        (list(layer._forward_pre_hooks), list(layer.self_attn._forward_hooks)) for layer in tiny_model.model.layers
    ]
    assert all(torch.equal(v, state[k]) for k, v in tiny_model.state_dict().items())
    assert [p.requires_grad for p in tiny_model.parameters()] == flags


def test_generation_reuses_the_memory_and_matches_full_forwards(tiny_model, tiny_tokenizer):
    ids, mask = ids_for(tiny_tokenizer, ["The aardwolf eats"])
    _, memory, memory_mask = memory_for(tiny_model, (2,))
    xattn = VistCrossAttention(tiny_model, CrossAttentionConfig(gate=0.5))  # rotary queries at each new position
    with torch.no_grad(), xattn.attach(tiny_model, memory, memory_mask):
        out = tiny_model.generate(
            ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id
        )
        seq = ids
        for _ in range(5):  # no KV cache: each step reads the whole sequence
            nxt = tiny_model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(out, seq)


def test_cross_attention_from_a_narrower_memory_and_on_some_layers(tiny_model):
    c = CrossAttentionConfig(memory_dim=16, layers=(1, 3), out_init="copy")
    xattn = VistCrossAttention(tiny_model, c)
    assert len(xattn.blocks) == 2
    src = tiny_model.model.layers[1].self_attn
    assert torch.equal(xattn.blocks[0].k_proj.weight, src.k_proj.weight[:, :16])  # §3.4: the first D_m columns
    assert torch.equal(xattn.blocks[0].o_proj.weight, src.o_proj.weight)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad(), xattn.attach(tiny_model, torch.randn(1, 6, 16)):
        assert tiny_model(ids).logits.shape == (1, 4, tiny_model.config.vocab_size)
    with (
        pytest.raises(ValueError, match=r"memory must be \(B, S, 16\)"),
        xattn.attach(tiny_model, torch.randn(1, 6, 32)),
    ):
        pass
    with pytest.raises(ValueError, match="out_init"):
        CrossAttentionConfig(out_init="kaiming")


def test_a_training_step_moves_only_the_trainable_parameters(tiny_model, tiny_tokenizer):
    ids, mask = ids_for(tiny_tokenizer)
    llm = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    torch.manual_seed(0)
    res = PerceiverResampler(SMALL)
    xattn = VistCrossAttention(tiny_model, CrossAttentionConfig(gate=0.5))
    trainable = [*res.parameters(), *xattn.parameters()]
    before = [p.detach().clone() for p in trainable]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    out = res(torch.randn(3, 40, 12))
    memory, memory_mask = flatten_images(out.tokens, out.image_mask, [2, 1])
    with xattn.attach(tiny_model, memory, memory_mask):
        labels = ids.masked_fill(mask == 0, -100)
        loss = tiny_model(ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in tiny_model.parameters())
    assert all(torch.equal(v, llm[k]) for k, v in tiny_model.state_dict().items())
    assert all(not torch.equal(p, b) for p, b in zip(trainable, before))


def test_prefix_mode(tiny_model, tiny_tokenizer):
    ids, mask = ids_for(tiny_tokenizer)
    _, memory, memory_mask = memory_for(tiny_model)
    prefix = PrefixProjector(32, tiny_model.config.hidden_size)
    with torch.no_grad():
        base = tiny_model(ids, attention_mask=mask).logits
        empty = prefix.inputs(tiny_model, ids, memory, torch.zeros_like(memory_mask), mask)
        assert torch.allclose(tiny_model(**empty).logits, base, atol=1e-5)  # no memory: the plain LLM
        kw = prefix.inputs(tiny_model, ids, memory, memory_mask, mask)
        p = int(memory_mask.sum(1).max())
        assert kw["inputs_embeds"].shape == (2, p + ids.shape[1], tiny_model.config.hidden_size)
        assert kw["attention_mask"][:, :p].sum(1).tolist() == memory_mask.sum(1).tolist()
        logits = tiny_model(**kw).logits[:, -ids.shape[1] :]  # the text's positions line up with input_ids
        assert logits.shape == base.shape and not torch.allclose(logits, base, atol=1e-3)
        out = tiny_model.generate(**kw, max_new_tokens=3, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id)
        assert out.shape == (2, 3)
