"""vist as one model: distant text -> line images -> frozen PP-OCRv6 -> Perceiver resampler -> the LLM reads the
tokens (cross-attention in some decoder layers, or a prefix); the proximal text goes to the LLM as text.
docs/methods.md §3; the pieces are gistify.rendering, gistify.vist.{encoder,resampler,inject,pve}.

Images. The distant text is rendered with `Layout.line()` (one 48-px row per image, the encoder's own input
height, so it reads the pixels as drawn; 768 px = 96 encoder tokens, about 10 LLM tokens of prose per line), and
every `lines_per_image` consecutive lines are read by the resampler as one image of lines_per_image x 96 tokens,
like the paper's folded 224 x 224 image of 16 rows (§3.2): with 16 lines, one image holds about 150 LLM tokens
of prose, the paper's 146. The resampler gives `latents` tokens per image (the paper's 64) plus a CLS for PVE, so
the LLM reads about 150 / 64 = 2.3x fewer tokens than the text has, the paper's ratio. Greedy wrapping makes the
lines of a text that starts at a line start the same whether it is rendered alone or inside a longer text, so
features cached per article line (gistify_bench.train.vist) are exactly what inference computes.

Trained: the resampler, the cross-attention blocks (or the prefix projector) and PVE's visual head; frozen: the
encoder and the whole LLM. The token counts of the training corpus (for PVE's frequency masking) are saved with
the weights. Weights: `vist.safetensors` + `vist.json` (the card: configuration, how they were trained, what
they score held out) next to this file, written by `python -m gistify_bench.train.vist --ship`.

`gistify.compress(context, method="vist")` (vist/compress.py) splits a context into a distant part, read through
vist, and a proximal part kept as text. The configuration is in config.py, what the LLM reads in memory.py.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gistify.rendering import render, row_spans
from gistify.vist.config import TRAIN_COMMAND, WEIGHTS, VistConfig, VistWeightsError, card_path
from gistify.vist.inject import CrossAttentionConfig, PrefixProjector, VistCrossAttention
from gistify.vist.memory import Memory, Pages, blank_pages
from gistify.vist.resampler import PerceiverResampler, ResamplerConfig, flatten_images


class VistModel(nn.Module):
    """A frozen llama-family LLM reading distant text through vist.

    read(texts) -> [Pages]; memory([Pages]) -> Memory; logits / nll on token ids with a Memory; and for people:
    generate(distant_text, proximal_text), loss(distant_text, continuation), perplexity(...).
    """

    def __init__(self, lm: nn.Module, tokenizer: Any, config: VistConfig | None = None, encoder: Any = None):
        super().__init__()
        self.config = c = config or VistConfig()
        self.lm = lm.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.bos_token
        self._encoder = encoder
        hidden = lm.config.hidden_size
        dim = c.dim or hidden
        from gistify.vist.encoder import WIDTHS

        self.resampler = PerceiverResampler(
            ResamplerConfig(
                input_dim=WIDTHS[c.features],
                dim=dim,
                depth=c.depth,
                heads=c.heads,
                head_dim=c.head_dim,
                ff_mult=c.ff_mult,
                latents=c.memory_tokens_per_image,
                cls=True,
                max_tokens=c.lines_per_image * c.tokens_per_line,
                local=c.local_latents or c.slots_per_line is not None,
            )
        )
        parts = ["resampler"]
        if c.context_layers:  # context across the text's memory tokens, after the resampler
            from gistify.vist.context import SlotContext

            self.context = SlotContext(dim, c.context_layers, c.heads, c.context_window)
            parts.append("context")
        layers = lm.config.num_hidden_layers
        if c.inject == "xattn":
            ids = c.xattn_layers or tuple(range(c.xattn_every - 1, layers, c.xattn_every))
            reader = CrossAttentionConfig(
                memory_dim=dim, out_init=c.out_init, layers=ids, memory_norm=c.memory_norm, gate=c.gate, rope=c.rope
            )
            self.xattn = VistCrossAttention(lm, reader)
        else:
            self.prefix = PrefixProjector(dim, hidden)
        self.pve_head = nn.Linear(dim, hidden)  # §3.5: the CLS summary to the LLM's embedding width
        self.register_buffer("token_counts", torch.zeros(lm.config.vocab_size, dtype=torch.int64))
        self.register_buffer("samples", torch.zeros((), dtype=torch.int64))  # |S| of the corpus counted
        self.card: dict = {}  # how the loaded weights were trained (from_pretrained)
        self.trained_parts = (*parts, "xattn" if c.inject == "xattn" else "prefix", "pve_head")

    # -- the encoder ------------------------------------------------------------------------------------------------

    @property
    def encoder(self):
        if self._encoder is None:
            from gistify.vist.encoder import EncoderConfig, TextImageEncoder

            self._encoder = TextImageEncoder(EncoderConfig(features=self.config.features))
        return self._encoder

    def read(self, texts: list[str], chunk_lines: int = 64) -> list[Pages]:
        """Render each text in lines, encode them (frozen; cached by content) and group them into images.

        A long text is rendered and encoded `chunk_lines` lines at a time, from row starts (the same rows as
        rendering it whole): its line images (~0.1 MB each) are never all held at once. Features are kept in
        float16 (46 kB a line in float32), as vist_train caches them."""
        from gistify.vist.encoder import WIDTHS

        c = self.config
        layout = c.layout()
        out = []
        for text in texts:
            spans = row_spans(text, layout)
            lines = max(1, len(spans))  # an empty text: one blank line
            # filled chunk by chunk: no copy of the whole text's features is ever made (float16, as training caches)
            t, d = c.tokens_per_line, WIDTHS[c.features]
            pages = blank_pages(lines, c.lines_per_image, t, d, torch.half)
            features, mask = pages.features.view(-1, t, d), pages.mask.view(-1, t)  # line by line
            for k in range(0, lines, chunk_lines):
                piece = spans[k : k + chunk_lines]
                r = render(text, layout, piece[0][0], piece[-1][1]) if piece else render(text, layout)
                if piece and [row.span for row in r.rows] != piece:
                    raise RuntimeError(f"rendering from a row start changed the rows at row {k}")  # a bug: say so
                e = self.encoder.encode(r)  # (lines, T, D)
                features[k : k + len(e.features)] = e.features
                mask[k : k + len(e.features)] = e.mask
            if c.slots_per_line is not None:  # which stretch of which line each text token is drawn in
                from gistify.vist.slots import text_slots

                count = len(pages) * c.memory_tokens_per_image
                drawn = mask[: len(spans)].sum(1).numpy()
                _, pages.filled, pages.positions = text_slots(
                    self.tokenizer, text, np.array(spans).reshape(-1, 2), drawn, t, c.slots_per_line, count
                )
            out.append(pages)
        return out

    # -- trainable parts --------------------------------------------------------------------------------------------

    def trained_state(self, parts: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """The trained parts' weights (`parts`: a subset of trained_parts), with the corpus counts PVE reads."""
        parts = self.trained_parts if parts is None else parts
        state = {f"{p}.{k}": v for p in parts for k, v in getattr(self, p).state_dict().items()}
        return state | {"token_counts": self.token_counts, "samples": self.samples}

    def load_trained(self, state: dict[str, torch.Tensor], parts: tuple[str, ...] | None = None) -> None:
        """Load the trained parts (`parts`: only these, e.g. a checkpoint of the vision path whose blocks are a
        teacher's, loaded apart); a part that does not fit this configuration is an error."""
        for part in self.trained_parts if parts is None else parts:
            prefix = part + "."
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            module = getattr(self, part)
            ref = module.state_dict()
            if sub.keys() != ref.keys():
                lost, extra = sorted(ref.keys() - sub.keys()), sorted(sub.keys() - ref.keys())
                raise ValueError(
                    f"vist weights do not fit this configuration ({part}: missing {lost[:3]}, unexpected {extra[:3]})"
                )
            module.load_state_dict({k: v.to(ref[k].dtype) for k, v in sub.items()})
        with torch.no_grad():
            self.token_counts.copy_(state["token_counts"].to(torch.int64))
            self.samples.copy_(state["samples"].to(torch.int64))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for part in self.trained_parts for p in getattr(self, part).parameters()]

    def set_token_counts(self, counts: torch.Tensor, samples: int) -> None:
        with torch.no_grad():
            self.token_counts.copy_(counts)
            self.samples.fill_(samples)

    def importance(self) -> torch.Tensor | None:
        """PVE's s_w per token, or None when no corpus was counted."""
        from gistify.vist.pve import importance

        return importance(self.token_counts, int(self.samples)) if int(self.samples) else None

    # -- forward ----------------------------------------------------------------------------------------------------

    def memory(self, pages: list[Pages], chunk_images: int = 4) -> Memory:
        """The resampled tokens of every sample's images. Images are resampled `chunk_images` at a time (each
        alone: the same result), so a long text's activations (~10 MB an image) are never all alive at once."""
        feats = pages[0].features if len(pages) == 1 else torch.cat([p.features for p in pages])
        mask = pages[0].mask if len(pages) == 1 else torch.cat([p.mask for p in pages])
        outs = [
            self.resampler(feats[i : i + chunk_images].float(), mask[i : i + chunk_images])
            for i in range(0, len(feats), chunk_images)
        ]
        cls = torch.cat([o.cls for o in outs]) if outs[0].cls is not None else None
        image_mask = torch.cat([o.image_mask for o in outs])
        images = [len(p) for p in pages]
        tokens, tmask = flatten_images(torch.cat([o.tokens for o in outs]), image_mask, images)
        positions = None
        if pages[0].filled is not None:  # one token per stretch: only stretches that hold text, at their positions
            filled = torch.zeros_like(tmask)
            positions = torch.zeros(tmask.shape)
            for b, p in enumerate(pages):
                filled[b, : len(p.filled)], positions[b, : len(p.positions)] = p.filled, p.positions
            tmask = tmask & filled
        if self.config.context_layers:
            tokens = self.context(tokens, tmask)
        return Memory(tokens, tmask, cls, image_mask, images, positions)

    def reading(self, memory: Memory | None, rows: int | None = None):
        """A block within which the LLM reads `memory` through the cross-attention blocks (its one sample
        repeated to `rows` rows, for a batch that shares it); None: the plain LLM. Prefix mode has no such block:
        its tokens go into the input (PrefixProjector.inputs)."""
        if memory is None:
            return nullcontext()
        if self.config.inject != "xattn":
            raise ValueError("reading() needs inject='xattn'; with 'prefix' the memory is part of the input")
        tokens, mask, positions = memory.tokens, memory.mask, memory.positions
        if rows is not None:
            tokens, mask = tokens.expand(rows, -1, -1), mask.expand(rows, -1)
            positions = None if positions is None else positions.expand(rows, -1)
        return self.xattn.attach(self.lm, tokens, mask, positions=positions)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, memory: Memory | None) -> torch.Tensor:
        """(B, T, V) next-token logits of the text `input_ids` reading `memory` (None: the plain LLM)."""
        if memory is None or self.config.inject == "xattn":
            with self.reading(memory):
                return self.lm(input_ids=input_ids, attention_mask=attention_mask).logits
        kw = self.prefix.inputs(self.lm, input_ids, memory.tokens, memory.mask, attention_mask)
        return self.lm(**kw).logits[:, -input_ids.shape[1] :]

    def nll(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        memory: Memory | None,
        scored: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample, the summed negative log-likelihood of the tokens `scored` (B, T) marks (default: every
        text token after the first) and how many there are: (B,), (B,)."""
        logits = self.logits(input_ids, attention_mask, memory)[:, :-1].float()
        targets = input_ids[:, 1:]
        use = attention_mask[:, 1:].bool() if scored is None else (scored[:, 1:] & attention_mask[:, 1:].bool())
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        ce = ce.view(targets.shape) * use
        return ce.sum(1), use.sum(1)

    # -- saving and loading -----------------------------------------------------------------------------------------

    def save(
        self,
        path: str | Path,
        card: dict | None = None,
        dtype: torch.dtype = torch.bfloat16,
        parts: tuple[str, ...] | None = None,
    ) -> Path:
        """Write the trained parts (floats as `dtype`; `parts`: only these) to `path` and the card (with the config
        and the parts saved) next to it."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # buffers (the resampler's feature statistics) stay float32: in bfloat16 a mean of 30 is off by 0.1
        buffers = {f"{p}.{k}" for p in self.trained_parts for k, _ in getattr(self, p).named_buffers()}
        state = {
            k: (v.float() if k in buffers else v.to(dtype))
            if v.is_floating_point()
            else (v.to(torch.int32) if k == "token_counts" else v)
            for k, v in self.trained_state(parts).items()
        }
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path))
        full = {"config": self.config.to_dict(), "weights_dtype": str(dtype).removeprefix("torch."), **(card or {})}
        full["parts"] = list(self.trained_parts if parts is None else parts)
        card_path(path).write_text(json.dumps(full, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        lm: nn.Module | None = None,
        tokenizer: Any = None,
        encoder: Any = None,
        dtype: torch.dtype = torch.float32,
    ) -> VistModel:
        """The shipped vist weights (or those vist_train wrote at `path`) on their LLM (default: the embedded
        SmolLM2, the one they were trained on). Raises VistWeightsError with the command that makes them."""
        from safetensors.torch import load_file

        path = Path(path) if path else WEIGHTS
        card = card_path(path)
        if not path.is_file() or not card.is_file():
            missing = path if not path.is_file() else card
            raise VistWeightsError(
                f"no vist weights at {missing}: train them with `{TRAIN_COMMAND}` (about 40 minutes on 2 CPU "
                "cores; it writes them next to gistify/vist/model.py), or pass the path of a vist.safetensors "
                "that vist_train wrote (with its vist.json beside it)"
            )
        info = json.loads(card.read_text())
        config = VistConfig.from_dict(info["config"])
        if lm is None:
            from gistify.models import load

            lm, tokenizer = load(info.get("llm"))
        model = cls(lm.to(dtype), tokenizer, config, encoder)
        parts = info.get("parts")
        if parts and set(parts) != set(model.trained_parts):  # a training checkpoint of some parts only
            raise VistWeightsError(
                f"{path} holds only vist's {', '.join(parts)}: a training checkpoint (gistify_bench.train.distill "
                "--init), not a model; load the vist.safetensors its run wrote"
            )
        model.load_trained(load_file(str(path)))
        model.card = info
        return model.eval()

    # -- for people -------------------------------------------------------------------------------------------------

    def _ids(self, texts: list[str], side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
        self.tokenizer.padding_side = side
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return enc["input_ids"], enc["attention_mask"]

    @torch.no_grad()
    def generate(
        self,
        distant_text: str,
        proximal_text: str,
        max_new_tokens: int = 64,
        memory: Memory | None = None,
        chat: bool = False,
        **kwargs,
    ) -> str:
        """Continue `proximal_text` (read as text) with `distant_text` read through vist; greedy by default.

        chat: wrap the proximal text in the tokenizer's chat template as a user turn (an instruct LLM answering a
        question; vist itself was trained on plain continuation). memory: reuse a Memory (from `compress`).
        """
        if not proximal_text:
            raise ValueError("generate() needs a non-empty proximal_text (the prompt the LLM continues)")
        if chat:
            messages = [{"role": "user", "content": proximal_text}]
            proximal_text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        memory = memory if memory is not None else self.memory(self.read([distant_text]))
        ids, mask = self._ids([proximal_text], "left")
        kwargs = {"do_sample": False, "pad_token_id": self.tokenizer.pad_token_id, **kwargs}
        if self.config.inject == "xattn":
            with self.reading(memory):
                out = self.lm.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, **kwargs)
            new = out[0, ids.shape[1] :]
        else:
            kw = self.prefix.inputs(self.lm, ids, memory.tokens, memory.mask, mask)
            new = self.lm.generate(**kw, max_new_tokens=max_new_tokens, **kwargs)[0]
        return self.tokenizer.decode(new, skip_special_tokens=True)

    @torch.no_grad()
    def loss(self, distant_text: str | None, continuation: str, proximal_text: str = "") -> float:
        """Mean NLL (nats per token) of `continuation` after `proximal_text`, reading `distant_text` through vist
        (None: the plain LLM). With no proximal text, the first continuation token has nothing before it in the
        text and is not scored."""
        n_prox = len(self._ids([proximal_text])[0][0]) if proximal_text else 0
        ids, mask = self._ids([proximal_text + continuation])
        scored = torch.zeros_like(ids, dtype=torch.bool)
        scored[:, n_prox:] = True
        if ids.shape[1] - max(n_prox, 1) < 1:
            raise ValueError("loss() needs a continuation with a token to score")
        memory = None if distant_text is None else self.memory(self.read([distant_text]))
        total, count = self.nll(ids, mask, memory, scored)
        return float(total.sum() / count.sum())

    def perplexity(self, distant_text: str | None, continuation: str, proximal_text: str = "") -> float:
        return math.exp(self.loss(distant_text, continuation, proximal_text))
