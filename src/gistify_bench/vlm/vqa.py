"""Visual question answering data for the small VLM: easy-vqa (MIT), single images and four-object composites.

easy-vqa 1.0 (a PyPI wheel, installed with the bench extra) has 4,000 train and 1,000 test 64 x 64 images of
one coloured shape (8 colours x 3 shapes) and 38,575 / 9,673 template questions about them. Splits:
- "train": train images 0..3599 (training the VLM);
- "dev": train images 3600..3999 (held out from training; for choosing settings);
- "test": the 1,000 test images (held-out accuracy and the benchmarks only).

Composites put four images of four different colours in a 2 x 2 grid (128 x 128) and ask about one of them,
named by an attribute: "what is the teal shape?" (its shape) or "what color is the circle?" (when the circle
is the only one). The asked object fills a quarter of the image, so which visual tokens matter depends on the
question: visual saliency alone cannot tell (the setting recover's question guidance exists for).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
SHAPES = ("circle", "rectangle", "triangle")
SPLITS = ("train", "dev", "test")
N_TRAIN_IMAGES = 3600  # train images below this id train the VLM; the rest are the dev split


@dataclass(frozen=True)
class Example:
    """One question about one image. `image` is a PIL image; `target` is where the asked object lies (the
    quadrant index for composites, None for single images)."""

    image: object
    question: str
    answer: str
    kind: str  # "single" or "composite"
    target: int | None = None


def _package_dir() -> Path:
    try:
        import easy_vqa
    except ImportError as e:
        raise ImportError("the VQA data needs the easy-vqa wheel: pip install 'gistify[bench]' (easy-vqa==1.0)") from e
    return Path(easy_vqa.__file__).parent / "data"


def _part(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return "test" if split == "test" else "train"


def _in_split(image_id: int, split: str) -> bool:
    return split == "test" or (image_id < N_TRAIN_IMAGES) == (split == "train")


@lru_cache(maxsize=3)
def questions(split: str) -> list[tuple[str, str, int]]:
    """easy-vqa's (question, answer, image id) of the split's images."""
    rows = json.loads((_package_dir() / _part(split) / "questions.json").read_text())
    return [(q, a, i) for q, a, i in rows if _in_split(i, split)]


@lru_cache(maxsize=3)
def attributes(split: str) -> dict[int, tuple[str, str]]:
    """image id -> (colour, shape), read off the image's questions: "what colour/shape" answers and yes/no
    questions that affirm a colour or shape."""
    color, shape = {}, {}
    for q, a, i in questions(split):
        words = q.rstrip("?").split()
        if a in COLORS:
            color[i] = a
        elif a in SHAPES:
            shape[i] = a
        elif (a == "yes") != ("not" in words):  # "is there a red shape?" yes / "is there not a red shape?" no
            for w in words:
                if w in COLORS:
                    color[i] = w
                elif w in SHAPES:
                    shape[i] = w
    return {i: (color[i], shape[i]) for i in color if i in shape}


def image(split: str, image_id: int):
    from PIL import Image

    with Image.open(_package_dir() / _part(split) / "images" / f"{image_id}.png") as im:
        return im.convert("RGB")


def singles(split: str, n: int | None = None, seed: int = 0) -> list[Example]:
    """easy-vqa's own questions, shuffled with `seed` (the first n)."""
    rows = list(questions(split))
    random.Random(seed).shuffle(rows)
    return [Example(image(split, i), q, a, "single") for q, a, i in rows[:n]]


def composite(split: str, rng: random.Random) -> Example:
    """Four images of four different colours in a 2 x 2 grid and a question about one of them."""
    from PIL import Image

    attrs = attributes(split)
    ids = list(attrs)
    chosen: list[int] = []
    while len(chosen) < 4:
        i = rng.choice(ids)
        if attrs[i][0] not in {attrs[j][0] for j in chosen}:
            chosen.append(i)
    canvas = Image.new("RGB", (128, 128))
    for q, i in enumerate(chosen):
        canvas.paste(image(split, i), (64 * (q % 2), 64 * (q // 2)))
    shapes = [attrs[i][1] for i in chosen]
    unique = [q for q, s in enumerate(shapes) if shapes.count(s) == 1]
    target = rng.randrange(4)
    if unique and rng.random() < 0.5:  # ask the colour of the only circle / rectangle / triangle
        target = rng.choice(unique)
        c, s = attrs[chosen[target]]
        return Example(canvas, f"what color is the {s}?", c, "composite", target)
    c, s = attrs[chosen[target]]
    return Example(canvas, f"what is the {c} shape?", s, "composite", target)


def composites(split: str, n: int, seed: int = 0) -> list[Example]:
    rng = random.Random(f"composite-{split}-{seed}")
    return [composite(split, rng) for _ in range(n)]


def examples(task: str, split: str, n: int, seed: int = 0) -> list[Example]:
    """The benchmark tasks: "easyvqa" (single images) or "easyvqa-4" (composites)."""
    if task == "easyvqa":
        return singles(split, n, seed)
    if task == "easyvqa-4":
        return composites(split, n, seed)
    raise ValueError(f"unknown VQA task {task!r}: easyvqa or easyvqa-4")


def correct(prediction: str, answer: str) -> bool:
    """The answer is the first word of the prediction (easy-vqa answers are single words)."""
    words = prediction.replace(".", " ").replace(",", " ").split()
    return bool(words) and words[0] == answer
