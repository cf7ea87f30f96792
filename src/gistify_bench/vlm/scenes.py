"""Question-dependent VQA data for the small VLM, generated: several objects per image, the question names one.

Two tasks, both drawn with Pillow at the encoder's resolution (224 x 224, so each visual token is a 16 x 16 cell
and nothing is resampled), objects in distinct slots of a 3 x 3 layout (each slot about 75 px, an object 44-60 px,
so the asked object covers about 3 x 3 to 4 x 4 of the 14 x 14 cells: 5-8% of the visual tokens):
- "scenes": four shapes of four different colours (6 shapes x 8 colours); the question names one object by its
  colour, its shape or its position (four distinct colours and shapes), and asks its shape or colour:
  "what shape is the purple object?", "what color is the star?", "what shape is at the bottom left?".
- "labels": four short printed words in four colours among two unlabelled distractor shapes; the question names
  one word by its colour or position and asks the word: "what word is written in red?" (reading text is where
  token pruning is known to break).
The asked object's pixel box comes with each example, so the ground-truth control (keep exactly its tokens) and
the share of kept tokens on it (`on_target`) are exact. Examples are a function of (split, seed, index): the
splits draw from different streams, so "test" is held out from "train" by construction.

Chance: a model that sees which attributes are present but not which object the question names scores about one
in four (four objects); `chance` measures it on the data.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache

import torch

SIZE = 224  # the encoder's input: no resize, one visual token per 16 x 16 cell
CELL = 16
SLOTS = 3  # a 3 x 3 layout of slots, each named by its position
COLORS = {
    "red": (220, 30, 30),
    "green": (30, 160, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 40, 170),
    "orange": (245, 130, 20),
    "black": (20, 20, 20),
    "pink": (245, 120, 190),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
WORDS = ("cat", "dog", "sun", "car", "box", "key", "pen", "cup", "hat", "map", "egg", "bus")
POSITIONS = (
    "top left", "top center", "top right", "middle left", "center", "middle right",
    "bottom left", "bottom center", "bottom right",
)  # fmt: skip
TASKS = ("scenes", "labels")
SPLITS = ("train", "dev", "test")
FONT = "DejaVuSans-Bold.ttf"  # the rendering fonts gistify already uses (DejaVu, installed with fontconfig)


@dataclass(frozen=True)
class Example:
    """One question about one generated image. `box` is the asked object's (x0, y0, x1, y1) in pixels."""

    image: object
    question: str
    answer: str
    kind: str
    box: tuple[int, int, int, int]
    qtype: str  # which attribute names the object and which is asked, e.g. "color->shape"
    choices: tuple[str, ...] = ()  # the asked attribute of every object in the image (the chance baseline's pool)

    @property
    def target(self) -> torch.Tensor:
        return box_cells(self.box)


def box_cells(box: tuple[int, int, int, int], min_cover: float = 0.25) -> torch.Tensor:
    """(196,) bool: the row-major cells of the 14 x 14 grid that `box` covers by at least `min_cover` of a cell."""
    n = SIZE // CELL
    edges = torch.arange(n + 1) * CELL
    x0, y0, x1, y1 = box
    over_x = (torch.minimum(edges[1:], torch.tensor(x1)) - torch.maximum(edges[:-1], torch.tensor(x0))).clamp(min=0)
    over_y = (torch.minimum(edges[1:], torch.tensor(y1)) - torch.maximum(edges[:-1], torch.tensor(y0))).clamp(min=0)
    cover = over_y[:, None] * over_x[None, :] / CELL**2
    return (cover >= min_cover).flatten()


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rr = r if k % 2 == 0 else r * 0.45
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    if shape == "cross":
        w = r * 0.38
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
                (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
                (cx - r, cy - w), (cx - w, cy - w)]  # fmt: skip
    raise ValueError(f"unknown shape {shape!r}")


def _draw_shape(draw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon(_polygon(shape, (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2), fill=fill)


@lru_cache(maxsize=4)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.truetype(FONT, size)


def _layout(rng: random.Random, n: int, lo: int = 44, hi: int = 60) -> list[tuple[int, tuple[int, int, int, int]]]:
    """n distinct slots with an object box jittered inside each: [(slot, (x0, y0, x1, y1))]."""
    pitch = SIZE / SLOTS
    out = []
    for slot in rng.sample(range(SLOTS * SLOTS), n):
        s = rng.randint(lo, hi)
        x = int(slot % SLOTS * pitch + rng.uniform(2, pitch - s - 2))
        y = int(slot // SLOTS * pitch + rng.uniform(2, pitch - s - 2))
        out.append((slot, (x, y, x + s, y + s)))
    return out


def scene(rng: random.Random) -> Example:
    """Four shapes of four different colours and a question about one of them."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    colors = rng.sample(list(COLORS), 4)
    shapes = rng.sample(SHAPES, 4)  # distinct, so guessing among the image's objects is right one time in four
    layout = _layout(rng, 4)
    for (_, box), c, s in zip(layout, colors, shapes):
        _draw_shape(draw, s, box, COLORS[c])
    i = rng.randrange(4)
    slot, box = layout[i]
    qtype = rng.choice(("color->shape", "shape->color", "position->shape", "position->color"))
    if qtype == "color->shape":
        q, a = f"what shape is the {colors[i]} object?", shapes[i]
    elif qtype == "shape->color":
        q, a = f"what color is the {shapes[i]}?", colors[i]
    elif qtype == "position->shape":
        q, a = f"what shape is at the {POSITIONS[slot]}?", shapes[i]
    else:
        q, a = f"what color is the object at the {POSITIONS[slot]}?", colors[i]
    pool = tuple(shapes) if qtype.endswith("shape") else tuple(colors)
    return Example(im, q, a, "scenes", box, qtype, pool)


def label_scene(rng: random.Random) -> Example:
    """Four words in four colours and two unlabelled shapes; a question asks one word, named by colour or slot."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    colors = rng.sample(list(COLORS), 6)
    words = rng.sample(WORDS, 4)
    layout = _layout(rng, 6, 40, 52)
    boxes = []
    for k, (_, box) in enumerate(layout):
        if k < 4:  # a word placed at random inside its slot (3 letters at 28-34 px fit the slot's 74 px)
            font = _font(rng.randint(28, 34))
            x0, y0, x1, y1 = draw.textbbox((0, 0), words[k], font=font)
            sx, sy = layout[k][0] % SLOTS * SIZE // SLOTS, layout[k][0] // SLOTS * SIZE // SLOTS
            at = (
                sx - x0 + rng.uniform(1, SIZE / SLOTS - (x1 - x0) - 1),
                sy - y0 + rng.uniform(1, SIZE / SLOTS - (y1 - y0) - 1),
            )
            draw.text(at, words[k], font=font, fill=COLORS[colors[k]])
            boxes.append(tuple(int(v) for v in draw.textbbox(at, words[k], font=font)))
        else:  # a distractor shape
            _draw_shape(draw, rng.choice(SHAPES), box, COLORS[colors[k]])
    i = rng.randrange(4)
    if rng.random() < 0.5:
        q, qtype = f"what word is written in {colors[i]}?", "color->word"
    else:
        q, qtype = f"what word is at the {POSITIONS[layout[i][0]]}?", "position->word"
    return Example(im, q, words[i], "labels", boxes[i], qtype, tuple(words))


def _stream(task: str, split: str, seed: int) -> random.Random:
    if task not in TASKS:
        raise ValueError(f"unknown generated task {task!r}: one of {TASKS}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return random.Random(f"{task}-{split}-{seed}")


def examples(task: str, split: str, n: int, seed: int = 0) -> list[Example]:
    """The first n examples of (task, split, seed): the same call always gives the same images and questions."""
    rng = _stream(task, split, seed)
    make = scene if task == "scenes" else label_scene
    return [make(rng) for _ in range(n)]


def answers(task: str) -> tuple[str, ...]:
    """Every answer the task can have."""
    return tuple(WORDS) if task == "labels" else (*SHAPES, *COLORS)


def chance(data: list[Example]) -> dict[str, float]:
    """Two chance levels on `data`: guessing the asked attribute among the image's objects uniformly (what a model
    scores that reads every object but not which one the question names) and always giving the commonest answer."""
    if not data:
        raise ValueError("chance needs at least one example")
    among = sum(e.choices.count(e.answer) / len(e.choices) for e in data) / len(data)
    common = max(sum(e.answer == a for e in data) for a in {e.answer for e in data}) / len(data)
    return {"among_objects": among, "commonest_answer": common}
