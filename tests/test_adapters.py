"""gistify.reduce on tiny random-weight LLaVA, Idefics3 and SmolVLM models built from configs (no downloads):
identity is exact, every method generates, prompt and KV cache shrink by what the Reductions say, batches with
different budgets answer as the samples one by one, and nothing is left on the model afterwards."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3VisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMVisionConfig,
)

import gistify
from gistify.vision.adapters import adapter_class
from gistify.vision.adapters.base import ANALOGUE_NOTE, FASTV_NOTE
from gistify.vision.adapters.llava import LlavaAdapter, TextTower
from gistify.vision.adapters.prompt import clean_question, locate_images

IMG, FAKE, PAD = 100, 101, 0  # image placeholder, Idefics3's <fake_token_around_image>, padding
NEW = 4  # tokens generated per test
pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread
METHODS = ("recover", "random", "pool", "fastv", "visionzip", "prumerge", "tome", "reinforce")
DYNAMIC = ("recover", "prumerge", "reinforce")


def _llama(**kw) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=PAD,
        **kw,
    )


def _vision(cls, image_size: int):
    return cls(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=image_size,
        patch_size=4,
    )  # fmt: skip


@dataclass
class Case:
    model: torch.nn.Module
    placeholder: list[int]  # the prompt tokens of one image
    size: int  # image side in pixels
    nested: bool  # pixel_values (B, images, 3, H, W) as Idefics3's processor gives them

    @property
    def n(self) -> int:
        return self.placeholder.count(IMG)


def llava(strategy: str = "default", attn: str = "sdpa", layer: int | list[int] = -2) -> Case:
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=_vision(CLIPVisionConfig, 32),
        text_config=_llama(),
        image_token_id=IMG,
        vision_feature_layer=layer,
        vision_feature_select_strategy=strategy,
    )
    model = LlavaForConditionalGeneration._from_config(config, attn_implementation=attn).eval()
    n = 64 + (strategy == "full")  # 8 x 8 patches, plus [CLS] under "full"
    return Case(model, [IMG] * n, 32, False)


def idefics3(smol: bool = False) -> Case:
    torch.manual_seed(0)
    vision = _vision(SmolVLMVisionConfig if smol else Idefics3VisionConfig, 64)  # 16 x 16 patches
    config = (SmolVLMConfig if smol else Idefics3Config)(
        vision_config=vision, text_config=_llama(), image_token_id=IMG, scale_factor=2
    )
    model = (SmolVLMForConditionalGeneration if smol else Idefics3ForConditionalGeneration)(config).eval()
    return Case(model, [FAKE] + [IMG] * 64 + [FAKE], 64, True)  # 64 connector tokens per sub-image


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    return {"llava": llava(), "idefics3": idefics3(), "smolvlm": idefics3(smol=True)}


def image(case: Case, k: int) -> torch.Tensor:
    return torch.randn(3, case.size, case.size, generator=torch.Generator().manual_seed(k))


def batch(case: Case, *samples: list) -> dict[str, torch.Tensor]:
    """Left-padded inputs; a sample is a list of token ids and image names ("img0": image 0 of a fixed pool)."""
    rows, images = [], []
    for sample in samples:
        row, pics = [], []
        for item in sample:
            if isinstance(item, str):
                row += case.placeholder
                pics.append(image(case, int(item[3:])))
            else:
                row.append(item)
        rows.append(row)
        images.append(pics)
    width = max(map(len, rows))
    ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    if case.nested:  # missing images are all-zero, which Idefics3 drops
        pixels = torch.zeros(len(rows), max(map(len, images)), 3, case.size, case.size)
        for b, pics in enumerate(images):
            pixels[b, : len(pics)] = torch.stack(pics)
    else:
        pixels = torch.stack([p for pics in images for p in pics])
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


ONE = [1, 5, "img0", 7, 8, 9, 10]
TWO = [1, 11, "img1", 12, "img2", 13]


def generate(model, inputs, **kw):
    return model.generate(**inputs, max_new_tokens=NEW, do_sample=False, return_dict_in_generate=True, **kw)


# -- identity --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llava", "idefics3", "smolvlm"])
@pytest.mark.parametrize("method", ["random", "recover"])
def test_keep_all_reproduces_the_model_exactly(cases, family, method):
    case = cases[family]
    inputs = batch(case, ONE, TWO)
    with torch.no_grad():
        logits = case.model(**inputs).logits
        sequences = generate(case.model, inputs).sequences
        with gistify.reduce(case.model, method, keep=1.0) as r:
            assert torch.equal(case.model(**inputs).logits, logits)
            assert torch.equal(generate(case.model, inputs).sequences, sequences)
    assert r.tokens_in == r.tokens_out == [case.n, 2 * case.n]


# -- every method generates; prompt and cache shrink as the Reductions say --------------------------------------


def _expected(method: str, keep: float | None, n: int, got: int) -> bool:
    if keep is None:  # the method's own rule: anything from 1 to n
        return 1 <= got <= n
    target = gistify.Budget(keep=keep).target(n)
    return got <= target if method == "pool" else got == target  # pooling keeps the largest grid that fits


@pytest.mark.parametrize("family", ["llava", "idefics3"])
@pytest.mark.parametrize("method, keep", [(m, k) for m in METHODS for k in (0.5, 0.1)] + [(m, None) for m in DYNAMIC])
def test_generate_shrinks_prompt_and_cache(cases, family, method, keep):
    case = cases[family]
    inputs = batch(case, TWO)  # two images in one prompt
    with gistify.reduce(case.model, method, keep=keep) as r:
        out = generate(case.model, inputs)
    (first, second) = r.reductions[0]
    assert all(_expected(method, keep, case.n, red.n_out) for red in (first, second))
    dropped = 2 * case.n - r.tokens_out[0]
    length = inputs["input_ids"].shape[1]
    assert r.inputs["input_ids"].shape == (1, length - dropped)
    assert out.past_key_values.get_seq_length() == length - dropped + NEW - 1
    assert out.sequences.shape == (1, length + NEW)
    assert torch.equal(out.sequences[:, :length], inputs["input_ids"])  # the user's prompt, then the answer
    if keep is None:
        assert first.budget_chosen == first.n_out


@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_forward_logits_cover_the_shortened_prompt(cases, family):
    case = cases[family]
    inputs = batch(case, ONE)
    with torch.no_grad(), gistify.reduce(case.model, "tome", tokens=5) as r:
        out = case.model(**inputs)
        # positional input_ids and a call without images (e.g. a decode step) pass through the hook too
        text_only = case.model(inputs["input_ids"][:, :2]).logits
    assert out.logits.shape[1] == inputs["input_ids"].shape[1] - (case.n - 5) == r.inputs["input_ids"].shape[1]
    assert out.past_key_values.get_seq_length() == out.logits.shape[1]
    with torch.no_grad():
        assert torch.equal(text_only, case.model(inputs["input_ids"][:, :2]).logits)


def test_llava_with_several_feature_layers_and_return_sequences():
    case = llava(layer=[-2, -1])  # the two layers' states concatenated
    inputs = batch(case, ONE, TWO)
    with torch.no_grad():
        logits = case.model(**inputs).logits
        with gistify.reduce(case.model, "random", keep=1.0):
            assert torch.equal(case.model(**inputs).logits, logits)
    with gistify.reduce(case.model, "visionzip", keep=0.2) as r:
        out = generate(case.model, inputs, num_beams=2, num_return_sequences=2)
    assert out.sequences.shape == (4, inputs["input_ids"].shape[1] + NEW)
    assert torch.equal(out.sequences[::2, : inputs["input_ids"].shape[1]], inputs["input_ids"])
    assert r.tokens_out == [13, 26]


# -- batches ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llava", "idefics3"])
@pytest.mark.parametrize(
    "method, budget",
    [("recover", {}), ("random", {"keep": [0.5, 0.1]}), ("fastv", {"tokens": [3, 20]}), ("pool", {"keep": [0.1, 1.0]})],
)
def test_batch_with_different_budgets_answers_as_one_by_one(cases, family, method, budget):
    case = cases[family]
    samples = (ONE, TWO)  # different lengths (left padding) and numbers of images
    with gistify.reduce(case.model, method, **budget) as r:
        together = generate(case.model, batch(case, *samples)).sequences[:, -NEW:]
    counts = r.tokens_out
    for b, sample in enumerate(samples):
        with gistify.reduce(case.model, method, **{k: v[b] for k, v in budget.items()}) as r:
            alone = generate(case.model, batch(case, sample)).sequences[:, -NEW:]
        assert r.tokens_out == [counts[b]]
        assert torch.equal(alone[0], together[b])


# -- the context each method reads -----------------------------------------------------------------------------


def test_fastv_attention_is_the_models_own(cases):
    case = llava(attn="eager")
    inputs = batch(case, TWO)
    with torch.no_grad():
        reference = case.model(**inputs, output_attentions=True).attentions[2][0, :, -1].mean(0)  # (S,)
        adapter = LlavaAdapter(case.model)
        contexts = adapter.encode(inputs, frozenset({"llm_attention"}))
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        spans = locate_images(ids, mask, IMG, [c.n for c in contexts])
        got = adapter.llm_attention(inputs, ids, mask, contexts, spans, layer=2)
    for span, attention in zip(spans, got):
        torch.testing.assert_close(attention, reference[span.positions].float(), atol=1e-6, rtol=0)
    with gistify.reduce(case.model, "fastv", keep=0.5, layer=1) as r:
        generate(case.model, inputs)
    assert FASTV_NOTE in r.notes


def test_idefics3_context_is_an_analogue_and_says_so(cases):
    case = cases["idefics3"]
    contexts = adapter_class(case.model)(case.model).encode(batch(case, TWO), frozenset({"cls_attention", "keys"}))
    for ctx in contexts:
        assert ctx.grid == (8, 8) and ctx.keys.shape == (64, 4 * 32)  # 2 x 2 patches per connector token
        torch.testing.assert_close(ctx.cls_attention.sum(), torch.tensor(1.0))  # received attention, averaged
    with gistify.reduce(case.model, "recover", keep=0.5) as r:
        generate(case.model, batch(case, ONE))
    assert ANALOGUE_NOTE in r.notes and any("SigLIP has no [CLS]" in n for n in r.notes)
    assert all(ANALOGUE_NOTE in red.notes for red in r.reductions[0])


def test_idefics3_padded_patches_receive_no_attention(cases):
    case = cases["idefics3"]
    inputs = batch(case, ONE)
    inputs["pixel_attention_mask"] = torch.ones(1, 1, 64, 64, dtype=torch.bool)
    inputs["pixel_attention_mask"][..., 32:] = False  # the right half is padding: patch columns 8-15
    (ctx,) = adapter_class(case.model)(case.model).encode(inputs, frozenset({"cls_attention"}))
    grid = ctx.cls_attention.view(8, 8)  # connector tokens: columns 4-7 gather only padded patches
    assert grid[:, 4:].abs().sum() == 0 and grid[:, :4].min() > 0
    torch.testing.assert_close(grid.sum(), torch.tensor(1.0))
    with gistify.reduce(case.model, "visionzip", keep=0.5) as r:
        generate(case.model, inputs)
    assert r.tokens_out == [32]


WORDS = ["<pad>", "<s>", "USER", ":", "ASSISTANT", "what", "color", "is", "the", "cat", "?", "A", "chat", "<unk>"]


@pytest.fixture(scope="module")
def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS)} | {"<image>": IMG}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>")


class SpyTower(TextTower):
    def embed(self, text):
        self.seen.append(text)
        return super().embed(text)


def tiny_clip(width: int = 32) -> CLIPModel:
    torch.manual_seed(1)
    text = {"vocab_size": 128, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 4, "max_position_embeddings": 32}  # fmt: skip
    vision = _vision(CLIPVisionConfig, 32).to_dict() | {"hidden_size": width}
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()


def test_recover_reads_the_question_with_the_clip_text_tower(cases, word_tokenizer):
    case = cases["llava"]
    system, question = (
        word_tokenizer(t)["input_ids"] for t in ("A chat USER :", "what color is the cat ? ASSISTANT :")
    )
    inputs = batch(case, system + ["img0"] + question)
    clip = tiny_clip()
    tower = SpyTower(clip, word_tokenizer, clip.visual_projection)
    tower.seen = []
    with gistify.reduce(case.model, "recover", text_tower=tower, tokenizer=word_tokenizer) as r:
        generate(case.model, inputs)
    assert tower.seen == ["what color is the cat ?"]  # the question only: no system prompt, no role markers
    assert ANALOGUE_NOTE not in r.notes
    with pytest.raises(ValueError, match="pass tokenizer="), gistify.reduce(case.model, "recover", text_tower=tower):
        generate(case.model, inputs)
    with pytest.raises(ValueError, match="visual_projection maps"):
        wide = tiny_clip(width=48)
        gistify.reduce(case.model, "recover", text_tower=TextTower(wide, word_tokenizer, wide.visual_projection))


def test_text_tower_loads_from_a_checkpoint_or_a_clip_model(cases, word_tokenizer, tmp_path):
    case = cases["llava"]
    tiny_clip().save_pretrained(tmp_path)
    word_tokenizer.save_pretrained(tmp_path)
    inputs = batch(case, [2, 3, "img0", 5, 6, 7, 8, 9, 10, 4, 3])
    for source in (str(tmp_path), CLIPModel.from_pretrained(tmp_path)):
        with gistify.reduce(case.model, "recover", text_tower=source, tokenizer=word_tokenizer) as r:
            generate(case.model, inputs)
        assert ANALOGUE_NOTE not in r.notes
    assert gistify.reduce(case.model, "recover", text_tower=str(tmp_path)).adapter.text_tower.model.vision_model is None
    with pytest.raises(ValueError, match="must be a CLIP checkpoint path"):
        gistify.reduce(case.model, "recover", text_tower=torch.nn.Linear(2, 2))


def test_clean_question_strips_templates():
    system = "A chat between a curious human and an artificial intelligence assistant. "
    llava_eval = f"{system}USER: \nWhat is in the box?\nAnswer the question using a single word or phrase. ASSISTANT:"
    assert clean_question(llava_eval) == "What is in the box?"
    assert clean_question("User:What is this?\nAssistant:") == "What is this?"
    assert clean_question("\nuser\nHow many dogs?\nassistant\n") == "How many dogs?"


# -- errors ----------------------------------------------------------------------------------------------------


def test_unsupported_model_names_the_supported_families():
    model = LlamaForCausalLM(_llama())
    with pytest.raises(ValueError, match="LLaVA-1.5.*Qwen2.5-VL.*SmolVLM / Idefics3"):
        gistify.reduce(model, "random", keep=0.5)


def test_bad_inputs_get_clear_errors(cases):
    case = cases["llava"]
    inputs = batch(case, ONE)
    with pytest.raises(ValueError, match="no budget rule of its own"):
        gistify.reduce(case.model, "random")
    with pytest.raises(ValueError, match="not both"):
        gistify.reduce(case.model, "random", keep=0.5, tokens=3)
    with pytest.raises(ValueError, match="2 per-sample budgets for a batch of 1"):
        with gistify.reduce(case.model, "random", keep=[0.5, 0.2]):
            generate(case.model, inputs)
    short = dict(inputs, input_ids=inputs["input_ids"][:, 1:], attention_mask=inputs["attention_mask"][:, 1:])
    short["input_ids"][0, 3] = 7  # one placeholder fewer than the image's 64 tokens
    with pytest.raises(ValueError, match="63 image tokens but its images give 64"):
        with gistify.reduce(case.model, "random", keep=0.5):
            generate(case.model, short)
    with pytest.raises(ValueError, match="no paired text tower"):
        gistify.reduce(cases["idefics3"].model, "recover", text_tower="openai/clip-vit-large-patch14-336")
    with pytest.raises(RuntimeError, match="already inside"):
        with gistify.reduce(case.model, "random", keep=0.5), gistify.reduce(case.model, "pool", keep=0.5):
            pass


def test_method_missing_its_context_says_what_provides_it():
    case = llava(strategy="full")  # [CLS] is a visual token: no patch grid
    with pytest.raises(ValueError, match="pool needs VisualContext.grid"):
        with gistify.reduce(case.model, "pool", keep=0.5):
            generate(case.model, batch(case, ONE))
    with gistify.reduce(case.model, "prumerge", keep=0.5) as r:  # [CLS] attention still there, its own first
        generate(case.model, batch(case, ONE))
    assert r.tokens_out == [33]


# -- nothing outlives the block --------------------------------------------------------------------------------

HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")


def _state(model) -> list:
    modules = [(name, [len(getattr(m, h)) for h in HOOKS], sorted(vars(m))) for name, m in model.named_modules()]
    configs = [model.config._attn_implementation, model.config.text_config._attn_implementation]
    return [modules, configs]


@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_nothing_is_left_after_the_block(cases, family):
    case = cases[family]
    inputs = batch(case, ONE, TWO)
    with torch.no_grad():
        logits = case.model(**inputs).logits  # transformers installs its own capture hooks once, lazily
    before = _state(case.model)
    with gistify.reduce(case.model, "fastv", keep=0.3):
        generate(case.model, inputs)
        assert "generate" in vars(case.model)
    assert _state(case.model) == before
    with pytest.raises(KeyError), gistify.reduce(case.model, "recover", keep=0.3):
        generate(case.model, inputs)
        raise KeyError("inside the block")
    assert _state(case.model) == before
    with torch.no_grad():
        assert torch.equal(case.model(**inputs).logits, logits)
