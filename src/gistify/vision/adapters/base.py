"""The adapter contract: how `gistify.reduce` puts a visual-token method inside a model.

`gistify.reduce(model, method, keep=...)` finds the model's family (`adapters/__init__.py`, FAMILIES), builds
its adapter and returns a `Session` (vision/session.py). Entering the `with` block calls
`adapter.install(session)`; leaving it (normally or by an exception) undoes, in reverse order, everything the
adapter registered through `session.patch` and `session.hook`. An adapter never touches a model in any other way,
so nothing outlives the block, and nothing is patched at import or when the Session is built.

Two levels of adapter:

`Adapter`: the minimum, for any model. Implement `install(session)`: register hooks/patches with
    `session.hook(handle)` / `session.patch(obj, name, value)`, and reduce the images of a call with
    `session.reduce_images(contexts, samples, n_samples, notes)`, which applies the method and the per-sample
    budgets and records the Reductions the user reads afterwards. A model whose own code takes a different
    number of visual tokens per sample (gistify_bench.vlm) needs no more than this.

`PlaceholderAdapter`: HF vision-language models whose prompt holds one placeholder token (`image_token_id`)
    per visual token and whose forward takes pre-encoded features as `mm_encoder_outputs` (LLaVA, Idefics3 /
    SmolVLM, Qwen2.5-VL in transformers 5). It rewrites a prefill call that carries images (`vision_inputs`):

    1. `encode(inputs, needs)` runs the vision side once and returns one VisualContext per image, in the order
       of their placeholders in the batch (row-major), with `features`, `visual_states` (the tokens as the LLM
       reads them, exactly what the unmodified model would scatter into the prompt) and the image-side fields
       the method needs (`needs`: its `required()`): [CLS] attention, keys, patch_text, grid;
    2. the adapter locates each image's placeholders, adds the question-side fields (`question_states`, `text`
       and `patch_text` through `text_context`, `llm_attention` through a scoring pass of the LLM's first
       layers on the full prompt) and reduces every image with the budget of its sample;
    3. `build_inputs` makes the shortened prompt: each image keeps K'_i of its N_i placeholders (the kept
       tokens, then the method's extra tokens, which thus follow the last kept slot), the batch is left-padded
       again with a new attention mask, per-token inputs (token type ids) are shortened alike, explicit
       position ids are recomputed from the new mask, and the reduced tokens (`to_llm` maps them into the
       LLM's space) go in as `mm_encoder_outputs`. The model's own code then checks that placeholders and
       features match and scatters them.

    `generate` is patched on the instance: it rewrites once and calls the original `generate` on the short
    prompt, so generate's own bookkeeping (mask, positions, KV cache) stays consistent, and returns sequences
    in the user's format (the original input_ids followed by the new tokens). Direct calls (`model(**inputs)`)
    are rewritten by a forward pre-hook: their logits and cache cover the shortened sequence
    (`session.inputs` holds it, for manual decoding). A family implements `encode` and `language_model`, and
    overrides where it differs: `to_llm` (a projector after the reduction point), `text_context` (a paired
    text tower), `notes` (what is an analogue), `build_inputs` (e.g. Qwen2.5-VL's M-RoPE position ids), or
    `rewrite` as a whole (the kwargs of a prefill call in, the kwargs of the shortened call out; it must call
    `session.reduce_images` and set `session.inputs`).

Shapes: B samples, S prompt length (S' after the rewrite), N_i / K'_i the visual tokens of image i before /
after, D' the LLM's width, H heads.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from gistify.vision.adapters.prompt import (
    ImageSpan,
    clean_question,
    columns,
    locate_images,
    restore_prompt,
    shorten,
    take,
)
from gistify.vision.base import Reduction, VisualContext

if TYPE_CHECKING:
    from gistify.vision.session import Session

# Context fields read from the prompt (the question) rather than from the image.
QUESTION_FIELDS = frozenset({"question_states", "text", "patch_text"})

ANALOGUE_NOTE = (
    "text guidance is an analogue (docs/methods.md §2.5), not the paper's CLIP text tower: `text` is the mean "
    "LLM input embedding of the prompt's text after the last image (the question and the chat template's tail) and "
    "`patch_text` the visual tokens as the LLM reads them"
)
QUESTION_NOTE = (
    "question_states are the LLM input embeddings of the prompt's text after the last image (the question and the "
    "chat template's tail)"
)
FASTV_NOTE = (
    "llm_attention is scored at the input: the LLM's first layers run once on the full prompt to rank the visual "
    "tokens, then the whole LLM reads the kept ones (FastV proper prunes inside the LLM after that layer)"
)


class Adapter:
    """Base of every family adapter. Subclasses set `family` (named in errors) and implement `install`."""

    family: ClassVar[str] = ""

    def __init__(self, model: nn.Module, text_tower: Any = None, tokenizer: Any = None):
        self.model = model
        self.tokenizer = tokenizer
        self.text_tower = self.load_text_tower(text_tower) if text_tower is not None else None

    def load_text_tower(self, text_tower: Any) -> Any:
        """Resolve `text_tower` (a path/id or an instance); families without a paired text tower refuse it."""
        raise ValueError(
            f"{self.family} has no paired text tower: leave text_tower=None (question guidance then uses the "
            "analogue of docs/methods.md §2.5, labelled in the Reductions' notes)"
        )

    def install(self, session: Session) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement install(session)")


@dataclass
class Question:
    """One sample's question: the prompt tokens it is read from, and their LLM input embeddings."""

    ids: torch.Tensor  # (M,) token ids
    states: torch.Tensor  # (M, D') input embeddings


class _Stop(Exception):
    """Ends the scoring pass once the attention of the wanted layer is captured."""


class PlaceholderAdapter(Adapter):
    """HF VLMs with one placeholder token per visual token and `mm_encoder_outputs` (see the module docstring)."""

    # The kwargs only the vision side reads, dropped from the rewritten call; the first is the images themselves
    # (a call carries images when it is set).
    vision_inputs: ClassVar[tuple[str, ...]] = ("pixel_values",)

    # -- what a family implements ----------------------------------------------------------------------------

    def encode(self, inputs: dict[str, Any], needs: frozenset[str]) -> list[VisualContext]:
        """One VisualContext per image of a prefill call, in placeholder order, with `visual_states` set."""
        raise NotImplementedError(f"{type(self).__name__} must implement encode(inputs, needs)")

    def language_model(self) -> nn.Module:
        """The LLM's decoder (its `.layers` and `.get_input_embeddings()`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement language_model()")

    def to_llm(self, ctx: VisualContext, tokens: torch.Tensor) -> torch.Tensor:
        """(K', D') the reduced tokens as the LLM reads them; identity when the reduction runs in that space."""
        return tokens

    def text_context(self, ctx: VisualContext, question: Question) -> tuple[dict[str, torch.Tensor], str | None]:
        """`text` and `patch_text` for question guidance, and a note for the user (or None). Default: the §2.5
        analogue in the LLM's input space (no paired text tower)."""
        return {"text": question.states.mean(0), "patch_text": ctx.visual_states}, ANALOGUE_NOTE

    def notes(self, needs: frozenset[str]) -> list[str]:
        """What the user should know about the image-side context `encode` gives for `needs` (an analogue...)."""
        return []

    @property
    def image_token_id(self) -> int:
        return self.model.config.image_token_id

    # -- installation ----------------------------------------------------------------------------------------

    def install(self, session: Session) -> None:
        model = self.model
        generate = model.generate  # the bound method in effect now (the class's, or an instance patch)
        signature = inspect.signature(model.forward)

        def reduced_generate(inputs=None, *args, **kwargs):
            if inputs is not None:
                kwargs["input_ids"] = inputs
            if not self._has_images(kwargs):
                return generate(*args, **kwargs)
            with torch.no_grad():  # generate itself runs without gradients
                short = self.rewrite(session, kwargs)
            original = kwargs["input_ids"]
            for key in ("max_length", "min_length"):  # generate's lengths count the prompt: keep the user's meaning
                if kwargs.get(key) is not None:
                    short[key] = kwargs[key] - original.shape[1] + short["input_ids"].shape[1]
            out = generate(*args, **short)
            return restore_prompt(out, original, short["input_ids"].shape[1])

        def pre_forward(module, args, kwargs):
            bound = signature.bind_partial(*args, **kwargs)  # positional inputs become keywords
            call = dict(bound.arguments)
            call.update(call.pop("kwargs", {}))
            if not self._has_images(call):
                return None
            return (), self.rewrite(session, call)

        session.patch(model, "generate", reduced_generate)
        session.hook(model.register_forward_pre_hook(pre_forward, with_kwargs=True))

    def _has_images(self, kwargs: dict) -> bool:
        return kwargs.get(self.vision_inputs[0]) is not None

    # -- the rewrite -----------------------------------------------------------------------------------------

    def rewrite(self, session: Session, inputs: dict[str, Any]) -> dict[str, Any]:
        """The kwargs of a prefill call with every image reduced (steps 1-3 of the module docstring)."""
        ids = inputs.get("input_ids")
        if ids is None:
            raise ValueError(
                "gistify.reduce needs input_ids (it finds the images by their placeholder tokens), not inputs_embeds"
            )
        mask = inputs.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask has shape {tuple(mask.shape)} but input_ids {tuple(ids.shape)}")
        needs = frozenset(session.method.required())
        contexts = self.encode(inputs, needs)
        spans = locate_images(ids, mask, self.image_token_id, [c.n for c in contexts])
        contexts, notes = self._add_prompt_context(session, inputs, ids, mask, contexts, spans, needs)
        notes = self.notes(needs) + notes
        reductions = session.reduce_images(contexts, [s.sample for s in spans], len(ids), notes)
        features = [  # an untouched image passes exactly what the unmodified model would read
            c.visual_states if r.tokens is c.features else self.to_llm(c, r.tokens)
            for c, r in zip(contexts, reductions)
        ]
        index = shorten(ids, mask, spans, [r.n_out for r in reductions])
        built = self.build_inputs(inputs, index, features, reductions)
        session.inputs = {"input_ids": built["input_ids"], "attention_mask": built["attention_mask"]}
        out = {k: v for k, v in inputs.items() if k not in self.vision_inputs}
        out.update(built)
        return out

    def _add_prompt_context(self, session, inputs, ids, mask, contexts, spans, needs):
        """The contexts completed with the question-side fields the method needs, and the notes they bring."""
        notes, extra = [], [{} for _ in contexts]
        if needs & QUESTION_FIELDS:
            questions = [self.question(ids[b], mask[b], [s for s in spans if s.sample == b]) for b in range(len(ids))]
            for i, (ctx, span) in enumerate(zip(contexts, spans)):
                q = questions[span.sample]
                if "question_states" in needs:
                    extra[i]["question_states"] = q.states
                    notes += [QUESTION_NOTE] if QUESTION_NOTE not in notes else []
                if needs & {"text", "patch_text"}:
                    fields, note = self.text_context(ctx, q)
                    extra[i].update(fields)
                    notes += [note] if note and note not in notes else []
        if "llm_attention" in needs:
            layer = session.method.attention_layer()
            attention = self.llm_attention(inputs, ids, mask, contexts, spans, layer)
            for e, a in zip(extra, attention):
                e["llm_attention"] = a
            notes.append(FASTV_NOTE)
        return [replace(c, **e) if e else c for c, e in zip(contexts, extra)], notes

    def question(self, ids: torch.Tensor, mask: torch.Tensor, spans: list[ImageSpan]) -> Question:
        """One sample's question: its text tokens after its last image (all its text tokens when none follow)."""
        text = (mask.bool() & (ids != self.image_token_id)).nonzero()[:, 0]  # (T,) positions of text tokens
        after = text[text > spans[-1].positions[-1]] if spans else text
        positions = after if len(after) else text
        embed = self.language_model().get_input_embeddings()
        return Question(ids[positions], embed(ids[positions]))

    def question_text(self, question: Question) -> str:
        """The question as text, for a text tower: decoded with the VLM's tokenizer, chat template stripped."""
        tokenizer = getattr(self.tokenizer, "tokenizer", self.tokenizer)  # a processor holds its tokenizer
        if tokenizer is None:
            raise ValueError(
                "text_tower reads the question as text: pass tokenizer= (the model's tokenizer or "
                "processor) to gistify.reduce"
            )
        return clean_question(tokenizer.decode(question.ids.tolist(), skip_special_tokens=True))

    def build_inputs(
        self,
        inputs: dict[str, Any],
        index: torch.Tensor,
        features: list[torch.Tensor],
        reductions: list[Reduction] | None = None,
    ) -> dict[str, Any]:
        """The model inputs of the shortened prompt: per-token tensors gathered at `index` (B, S'; -1 = padding),
        the new mask, recomputed position ids when the call gave some, and the features as mm_encoder_outputs.
        `reductions`: this call's, one per image in placeholder order (None on FastV's scoring pass, which reads
        the full prompt), for families whose positions depend on which slots were kept (Qwen2.5-VL)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        ids = inputs["input_ids"]
        fill = {"input_ids": self.pad_token_id(), "labels": -100}  # other per-token inputs (token types) pad with 0
        skip = {"attention_mask", "position_ids", *self.vision_inputs}
        out = {
            k: take(v, index, fill.get(k, 0))
            for k, v in inputs.items()
            if k not in skip and isinstance(v, torch.Tensor) and v.shape[:2] == ids.shape
        }
        mask = inputs.get("attention_mask")
        out["attention_mask"] = (index >= 0).to(mask.dtype if mask is not None else torch.long)
        if inputs.get("position_ids") is not None:
            out["position_ids"] = (out["attention_mask"].long().cumsum(-1) - 1).clamp_min(0)
        out["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=features)}
        return out

    def pad_token_id(self) -> int:
        """A token id for the padding the rewrite adds (masked out; never the image token)."""
        text_config = getattr(self.model.config, "text_config", self.model.config)
        for pad in (
            getattr(getattr(self.model, "generation_config", None), "pad_token_id", None),
            getattr(text_config, "pad_token_id", None),
        ):
            if isinstance(pad, int) and pad != self.image_token_id:
                return pad
        return 0 if self.image_token_id != 0 else 1

    # -- FastV's signal --------------------------------------------------------------------------------------

    def llm_attention(self, inputs, ids, mask, contexts, spans, layer: int) -> list[torch.Tensor]:
        """(N_i,) per image: the attention the sample's last prompt token pays to each of its visual tokens at
        LLM layer `layer` (mean over heads), from a pass over the full prompt that stops after that layer."""
        layers = self.language_model().layers
        if not 0 <= layer < len(layers):
            raise ValueError(f"the LLM has {len(layers)} layers; layer {layer} does not exist")
        index = shorten(ids, mask, spans, [c.n for c in contexts])  # nothing dropped, left-padded
        full = self.build_inputs(inputs, index, [c.visual_states for c in contexts])
        # (B, S): left-padded, so position -1 is each sample's last prompt token
        last_row = last_token_attention(layers[layer].self_attn, lambda: self.model(**full, use_cache=False))
        column = columns(index, ids.shape[1])
        return [last_row[s.sample, column[s.sample, s.positions]] for s in spans]


def last_token_attention(attention: nn.Module, run: Callable[[], Any]) -> torch.Tensor:
    """(B, S): the attention the last position pays to each position at one LLM layer, averaged over heads.

    `run()` is a forward over the full (left-padded) prompt; it stops as soon as `attention` (that layer's
    self-attention module) has run, computed eagerly for the duration so that it returns its weights."""
    captured = {}

    def grab(module, args, output):
        captured["weights"] = output[1]  # (B, H, S, S)
        raise _Stop

    config = attention.config
    implementation, config._attn_implementation = config._attn_implementation, "eager"
    handle = attention.register_forward_hook(grab)
    try:
        with torch.no_grad():
            run()
    except _Stop:
        pass
    finally:
        handle.remove()
        config._attn_implementation = implementation
    return captured["weights"][:, :, -1].float().mean(1)


@contextmanager
def captured_inputs(attention: nn.Module) -> Iterator[dict[str, Any]]:
    """Record what an attention module is called with ("hidden_states", "attention_mask") during the block:
    its queries and keys are then attention.q_proj / k_proj of those states (what the reference codes hook)."""
    seen: dict[str, Any] = {}

    def grab(module, args, kwargs):
        seen["hidden_states"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        seen["attention_mask"] = kwargs.get("attention_mask")

    handle = attention.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()
