"""A small LLaVA-style VLM built from real parts, for measuring visual-token reducers on a model that works.

No pretrained VLM could be had offline (no model download; only small wheels), so gistify trains one (`python -m
gistify_bench.train.vlm`): a frozen pretrained vision encoder (EfficientNet-Lite0, ImageNet), a trained
two-layer MLP projector (LLaVA-1.5's design), and the frozen SmolLM2-135M-Instruct reading

    [K visual tokens] "\\nQuestion: {question}\\nAnswer:"  ->  " {answer}\\n"

Because EfficientNet has no [CLS] token and no paired text tower, the model also carries the analogue of
both that docs/methods.md §2.5 describes for SigLIP-style towers, trained contrastively (not part of the
answer path): an attention-pooling probe (a learned query over the patches, like SigLIP's MAP head) whose
attention stands in for CLIP's [CLS] attention and whose value projection maps patches into a text-aligned
space, and a question head mapping the question's mean LLM input embedding into that space. `recover` reads
them through the gistify adapter exactly where LLaVA would give CLIP's [CLS] attention, keys,
visual_projection and text tower.

Reducers act through one seam: `token_reducer`, called with the encoder features of the batch (B, N, 155)
and the prompt, returns each image's tokens (K_i, 155) before the projector. Samples may keep different
numbers of tokens; the batch is then left-padded. `gistify.reduce` sets it inside its `with` block only.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gistify.vision.adapters import Family, register
from gistify_bench.vlm.efficientnet import STRIDE, WIDTH, load_encoder

# gistify.reduce finds the adapter of this model through the family registry (the library knows no harness code).
register(Family("gistify small VLM", ("GistVLM",), "gistify_bench.vlm.adapter", "GistVLMAdapter"))

IMAGE_SIZE = 224  # encoder input; 224 / 16 = a 14 x 14 grid of visual tokens
GRID = IMAGE_SIZE // STRIDE
ALIGN_WIDTH = 128  # the text-aligned space of the probe and question head
KEY_WIDTH = 64
LORA_RANK = 8
LORA_TARGETS = ("q_proj", "v_proj")
# Position channels appended to each token before any reducer (optional, per trained model): sin/cos of the cell's
# row and column at 4 frequencies. Reducers drop or average tokens and the sequence is renumbered after them, so
# a kept token's place in the sequence no longer says where it was in the image; the channels still do (merged
# tokens carry the mean of their cells' codes). Scaled down so that similarity-based reducers, which read the
# same features, are barely moved by them.
POSITION_CHANNELS = 16
POSITION_SCALE = 0.1
WEIGHTS = Path(__file__).with_name("gistvlm.safetensors")
CARD = Path(__file__).with_name("gistvlm.json")  # how the weights were trained and what they score

# (features (B, N, 155), the model's inputs) -> each image's reduced tokens [(K_i, 155)]
TokenReducer = Callable[[torch.Tensor, "VLMInputs"], list]


@dataclass
class VLMInputs:
    """One batch for the VLM. pixel_values: (B, 3, 224, 224) in [0, 1]; input_ids / attention_mask: (B, T) the
    text prompt after the image, left-padded; features: optionally the images already encoded (B, N, 155), for
    callers that read one image many times (the benchmarks)."""

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    features: torch.Tensor | None = None


class AttentionProbe(nn.Module):
    """Attention pooling with one learned query (SigLIP's MAP head, single head): the CLS-attention analogue.

    forward(features (B, N, C)) -> attention (B, N), keys (B, N, 64), patch_text (B, N, 128), pooled (B, 128).
    patch_text is each patch's value in the text-aligned space, so pooled = attention-weighted patch_text, as
    CLIP's image embedding relates to visual_projection applied to its patch tokens.
    """

    def __init__(self, width: int = WIDTH):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.query = nn.Parameter(torch.randn(KEY_WIDTH) / KEY_WIDTH**0.5)
        self.key = nn.Linear(width, KEY_WIDTH)
        self.value = nn.Linear(width, ALIGN_WIDTH)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.norm(features[..., :WIDTH])  # the encoder's channels (position channels, when any, follow)
        keys = self.key(h)
        attention = (keys @ self.query / KEY_WIDTH**0.5).softmax(-1)
        patch_text = self.value(h)
        pooled = (attention.unsqueeze(-1) * patch_text).sum(1)
        return attention, keys, patch_text, pooled


class LoRALinear(nn.Module):
    """A frozen Linear plus a trained low-rank update (Hu et al. 2021): y = W x + (alpha / r) B A x, B = 0 at
    the start, so the wrapped model begins exactly as the plain one."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base, self.scale = base, alpha / rank
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_features) / rank**0.5)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (x @ self.lora_a.T.to(x.dtype)) @ self.lora_b.T.to(x.dtype)
        return self.base(x) + self.scale * update


class GistVLM(nn.Module):
    """EfficientNet-Lite0 (frozen) -> MLP projector -> SmolLM2-135M (frozen), plus the alignment heads."""

    def __init__(
        self,
        lm: Any,
        tokenizer: Any,
        encoder: nn.Module | None = None,
        lora_rank: int = LORA_RANK,
        lora_targets: tuple[str, ...] = LORA_TARGETS,
        positions: bool = False,
        relevance: bool = False,
    ):
        super().__init__()
        self.encoder = encoder if encoder is not None else load_encoder()
        self.lm = lm.requires_grad_(False)
        # LoRA on the LLM's attention projections (q, v by default): the frozen 135M LLM with a projector alone
        # learned to read one shape but not to find the one asked about among four (dev: 45% on shapes, 7% on
        # colours).
        for layer in lm.model.layers:
            for name in lora_targets:
                setattr(layer.self_attn, name, LoRALinear(getattr(layer.self_attn, name), lora_rank, 2 * lora_rank))
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:  # prompts are left-padded in batches; the padding is masked out
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.bos_token
        d = lm.config.hidden_size
        # LLaVA-1.5's two-layer MLP, after a LayerNorm: the token joins channels of very different scales
        self.projector = nn.Sequential(nn.LayerNorm(WIDTH), nn.Linear(WIDTH, d), nn.GELU(), nn.Linear(d, d))
        # whether tokens carry position channels (added inside the projector's MLP; zero at the start, so a model
        # given them, or weights trained without them, begin reading as before)
        self.positions = positions
        self.position_proj = _zero(nn.Linear(POSITION_CHANNELS, d)) if positions else None
        # whether tokens carry a relevance channel s: how well each matches the question by the aligned heads
        # (`relevance_channel`, z-scored per image). It is added inside the projector's MLP like the positions
        # (zero at the start) and gates each projected token by sigmoid(w s + b) (w = 2, b = -1 at the start: a
        # token two deviations above the image's mean passes at 0.95, an average one at 0.27), so that the LLM
        # reads mostly the tokens the question points at: the frozen 135M LLM with LoRA did not learn to find the
        # asked object among four by itself (docs/results/vision/question-dependent.md)
        self.relevance = relevance
        self.relevance_proj = _zero(nn.Linear(1, d)) if relevance else None
        self.relevance_gate = nn.Linear(1, 1) if relevance else None
        if relevance:
            nn.init.constant_(self.relevance_gate.weight, 2.0)
            nn.init.constant_(self.relevance_gate.bias, -1.0)
        self.probe = AttentionProbe()
        self.question_head = nn.Linear(d, ALIGN_WIDTH)
        self.token_reducer: TokenReducer | None = None  # set only by gistify.reduce, inside its block

    # -- trained parts: saving and loading -------------------------------------------------------------------------

    def lora_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.lm.named_parameters() if ".lora_" in n}

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The parameters training changes (the encoder and the LLM's own weights stay as shipped)."""
        state = {f"{p}.{k}": v for p in self._parts() for k, v in getattr(self, p).state_dict().items()}
        return state | {f"lm.{n}": p.detach() for n, p in self.lora_parameters().items()}

    def _parts(self) -> tuple[str, ...]:
        return ("probe", "question_head") + self.answer_parts()

    def answer_parts(self) -> tuple[str, ...]:
        """What stage 2 trains besides the LoRA: the projector and the channels' parts (stage 1: the probe and head)."""
        channels = (("position_proj",) if self.positions else ()) + (
            ("relevance_proj", "relevance_gate") if self.relevance else ()
        )
        return ("projector",) + channels

    def load_trained(self, state: dict[str, torch.Tensor], missing_ok: tuple[str, ...] = ()) -> None:
        """Every trained part from `state`; the parts named in `missing_ok` may be absent (they keep their values)."""
        for part in self._parts():
            prefix = part + "."
            weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if weights or part not in missing_ok:
                getattr(self, part).load_state_dict(weights)
        with torch.no_grad():
            for name, p in self.lora_parameters().items():
                p.copy_(state[f"lm.{name}"])

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, dtype: torch.dtype = torch.float32) -> GistVLM:
        """The shipped VLM (or weights saved by gistify_bench.train.vlm at `path`), on the embedded SmolLM2."""
        from safetensors.torch import load_file

        from gistify.models import load

        path = Path(path) if path else WEIGHTS
        if not path.exists():
            raise FileNotFoundError(f"no VLM weights at {path}: train them with python -m gistify_bench.train.vlm")
        lm, tok = load()
        state = load_file(path)
        # a copy: the VLM wraps the LLM's projections in LoRA and casts it, and load() hands every caller in the
        # process the same cached model (a text compression after a VLM load must read the plain LLM)
        model = cls(copy.deepcopy(lm).to(dtype), tok, **architecture(state))
        model.load_trained(state)
        return model.eval()

    @staticmethod
    def card() -> dict:
        return json.loads(CARD.read_text()) if CARD.exists() else {}

    # -- the pieces the adapter and the training read -------------------------------------------------------------

    @staticmethod
    def pixels(images: list) -> torch.Tensor:
        """(B, 3, 224, 224) in [0, 1] from PIL images (any size; resized bilinearly)."""
        import numpy as np

        arrays = [np.asarray(im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), resample=2)) for im in images]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0

    def prompt_ids(self, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) (B, T) of the text after the image, left-padded."""
        texts = [f"\nQuestion: {q.strip()}\nAnswer:" for q in questions]
        self.tokenizer.padding_side = "left"
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return enc["input_ids"], enc["attention_mask"]

    def inputs(self, images: list, questions: list[str]) -> VLMInputs:
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions: give one question per image")
        ids, mask = self.prompt_ids(questions)
        return VLMInputs(self.pixels(images), ids, mask)

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) -> (B, N = 196, C) visual tokens, row-major over the 14 x 14 grid; C = 155, or
        155 + 16 position channels for a model trained with them."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (B, 3, H, W), got {tuple(pixel_values.shape)}")
        device = next(self.encoder.parameters()).device
        return self.with_positions(self.encoder(pixel_values.to(device).float()).flatten(2).transpose(1, 2))

    def with_positions(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, N, 155) encoder tokens -> the model's tokens: the position channels appended when it has them."""
        if not self.positions:
            return feats
        side = int(round(feats.shape[1] ** 0.5))
        code = position_code(side, side).to(feats)
        return torch.cat([feats, code.expand(len(feats), -1, -1)], -1)

    def question_embedding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, 128): the question head on the mean LLM input embedding of the prompt's tokens."""
        emb = self.lm.get_input_embeddings()(input_ids).float()
        m = attention_mask.unsqueeze(-1).float()
        return self.question_head((emb * m).sum(1) / m.sum(1).clamp(min=1))

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., D') visual tokens in the LLM's input space (position channels and the relevance
        channel, when the model has them, join the first layer's output; the relevance also gates the token)."""
        tokens = tokens.float()
        if not (self.positions or self.relevance):
            return self.projector(tokens)
        norm, first, act, second = self.projector
        h = first(norm(tokens[..., :WIDTH]))
        if self.positions:
            h = h + self.position_proj(tokens[..., WIDTH : WIDTH + POSITION_CHANNELS] / POSITION_SCALE)
        if not self.relevance:
            return second(act(h))
        s = tokens[..., -1:]  # (..., 1)
        return second(act(h + self.relevance_proj(s))) * torch.sigmoid(self.relevance_gate(s))

    @torch.no_grad()
    def relevance_channel(self, feats: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """(B, N, 1) how well each visual token of feats (B, N, C) matches its sample's question: the cosine between
        the question head's embedding of the prompt and the probe's text-aligned value of the token (what
        `recover` scores, §2.2 step 2), z-scored over the image's tokens. The heads are stage 1's (frozen after)."""
        q = F.normalize(self.question_embedding(input_ids, attention_mask), dim=-1)  # (B, 128)
        patch_text = F.normalize(self.probe(feats.float())[2], dim=-1)  # (B, N, 128)
        s = torch.einsum("bnd,bd->bn", patch_text, q)
        s = (s - s.mean(1, keepdim=True)) / s.std(1, keepdim=True).clamp_min(1e-6)
        return s.unsqueeze(-1)

    # -- the answer path -------------------------------------------------------------------------------------------

    def sequence(self, x: VLMInputs, extra: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
        """inputs_embeds (B, L, D'), attention_mask (B, L), position_ids (B, L) for [visual][prompt][extra].

        Each sample's visual tokens go through `token_reducer` when one is set; samples of different lengths
        are left-padded and positions count from each sample's first real token, so a padded batch reads
        like each sample alone. `extra`: per-sample target ids appended (teacher forcing in training).
        """
        feats = x.features if x.features is not None else self.encode(x.pixel_values)
        if self.relevance:  # the last channel, before any reducer: a merged token carries its cells' mean
            feats = torch.cat([feats, self.relevance_channel(feats, x.input_ids, x.attention_mask).to(feats)], -1)
        visual = self.token_reducer(feats, x) if self.token_reducer is not None else list(feats)
        embed = self.lm.get_input_embeddings()
        dtype = embed.weight.dtype
        rows = []
        for i, v in enumerate(visual):
            ids = x.input_ids[i][x.attention_mask[i].bool()].to(embed.weight.device)
            if extra is not None:
                ids = torch.cat([ids, extra[i]])
            rows.append(torch.cat([self.project(v.to(embed.weight.device)).to(dtype), embed(ids)]))
        length = max(len(r) for r in rows)
        d = rows[0].shape[-1]
        device = rows[0].device
        embeds = torch.zeros(len(rows), length, d, dtype=dtype, device=device)
        mask = torch.zeros(len(rows), length, dtype=torch.long, device=device)
        for i, r in enumerate(rows):
            embeds[i, length - len(r) :] = r
            mask[i, length - len(r) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return embeds, mask, positions

    def forward(self, pixel_values, input_ids, attention_mask, features=None, **kwargs):
        """LLM outputs over [visual tokens][prompt] (logits (B, L, vocab); L shrinks when tokens are reduced)."""
        embeds, mask, positions = self.sequence(VLMInputs(pixel_values, input_ids, attention_mask, features))
        return self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **kwargs)

    @torch.no_grad()
    def generate(
        self, pixel_values, input_ids, attention_mask, features=None, max_new_tokens: int = 4, **kwargs
    ) -> torch.Tensor:
        """(B, new tokens) greedy continuation ids of the prompt."""
        embeds, mask, _ = self.sequence(VLMInputs(pixel_values, input_ids, attention_mask, features))
        kwargs.setdefault("do_sample", False)
        kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        return self.lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, **kwargs)

    def answer(self, images: list, questions: list[str], max_new_tokens: int = 4) -> list[str]:
        """The first line of each greedy answer, stripped and lower-cased."""
        x = self.inputs(images, questions)
        out = self.generate(x.pixel_values, x.input_ids, x.attention_mask, max_new_tokens=max_new_tokens)
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [t.strip().split("\n")[0].strip().lower() for t in texts]


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, match: torch.Tensor, scale: torch.Tensor):
    """Multi-positive InfoNCE. image (B, A), text (T, A), match (T, B) bool: which images each text describes
    ("what is the blue shape?" describes every blue image in the batch); symmetric over both directions."""
    logits = scale * F.normalize(text, dim=-1) @ F.normalize(image, dim=-1).T  # (T, B)
    target = match.float()
    t2i = -(target / target.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    cols = target.sum(0) > 0
    i2t = -(target.T[cols] / target.T[cols].sum(1, keepdim=True) * logits.T[cols].log_softmax(1)).sum(1).mean()
    return (t2i + i2t) / 2


def _zero(layer: nn.Linear) -> nn.Linear:
    """`layer` with its weight and bias at zero: a channel that joins the projector adds nothing until trained."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def position_code(rows: int, cols: int) -> torch.Tensor:
    """(rows * cols, 16) the row-major cells' position channels: sin and cos of the row's and the column's
    centre (in [0, 1]) at frequencies 1, 2, 3, 4 (times pi), scaled by POSITION_SCALE."""
    freqs = torch.arange(1, POSITION_CHANNELS // 4 + 1) * torch.pi
    r = ((torch.arange(rows) + 0.5) / rows)[:, None] * freqs
    c = ((torch.arange(cols) + 0.5) / cols)[:, None] * freqs
    r_code = torch.cat([r.sin(), r.cos()], -1)[:, None].expand(rows, cols, -1)
    c_code = torch.cat([c.sin(), c.cos()], -1)[None].expand(rows, cols, -1)
    return POSITION_SCALE * torch.cat([r_code, c_code], -1).reshape(rows * cols, POSITION_CHANNELS)


def architecture(state: dict[str, torch.Tensor]) -> dict:
    """GistVLM's constructor settings that trained weights imply: LoRA rank and targets, position and relevance
    channels."""
    layer0 = "lm.model.layers.0.self_attn."
    first = {k.split(".")[-2]: v for k, v in state.items() if k.startswith(layer0) and k.endswith(".lora_a")}
    if not first:
        raise ValueError("these weights have no LoRA of the LLM's layer 0: not weights of gistify_bench.train.vlm")
    return {
        "lora_rank": next(iter(first.values())).shape[0],
        "lora_targets": tuple(sorted(first)),
        "positions": any(k.startswith("position_proj.") for k in state),
        "relevance": any(k.startswith("relevance_proj.") for k in state),
    }


__all__ = ["GRID", "GistVLM", "VLMInputs", "architecture", "contrastive_loss", "position_code"]


def quadrant_cells(grid: int = GRID) -> torch.Tensor:
    """(grid * grid,) the quadrant (0 top left .. 3 bottom right) of each cell of the row-major token grid."""
    r = torch.arange(grid)
    return ((r[:, None] * 2 // grid) * 2 + (r[None, :] * 2 // grid)).flatten()
