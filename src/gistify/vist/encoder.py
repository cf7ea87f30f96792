"""The frozen encoder of rendered text: PP-OCRv6's recognition model, run with onnxruntime.

The paper reads its images with a frozen OpenCLIP ViT-L/14 (docs/methods.md §3.3), whose value here is that
it can read text in images. No CLIP weights can be had offline; the text recogniser of PP-OCRv6 can (the ONNX
file inside the PyPI wheel `rapidocr`, Apache-2.0), and reading text is all it does.

The model takes a line image `x (N, 3, 48, W)` and makes one feature column per 8 px: a CNN backbone pooled to
height 1, `(N, 384, 1, W/8)`, then an SVTR neck (two attention blocks over the columns, width 120) and a linear CTC
head over 18,710 classes (blank, the characters in the model's metadata, space). gistify adds graph outputs for
the backbone and the neck features (found by their structure, not by name) and replaces the 18,710-wide softmax
output by its argmax and max, the only parts greedy CTC needs: 150 kB instead of 115 MB per 224 x 224 image.

An image of `Layout.fold()` is read row by row: each 14-px row is scaled to 48 px (224 -> 768 px, 96 tokens), so
an image gives 16 x 96 = 1536 tokens. An image of `Layout.line()` is read as drawn: 768 px, 96 tokens. Either way
the features of one image are `(L, D)` with L = rows x tokens per row and a mask `(L,)` that is False for tokens
wholly after the end of a row's text (PIXEL's empty-patch mask, per encoder token).

Features are cached by content: the key is a hash of the image's pixels, its layout and the encoder's settings,
so the same text rendered the same way is encoded once (in memory, and in `cache_dir` if one is given).

Axes: M images, R rows per image, T tokens per row (width / 8 after scaling to 48 px), L = R x T, D features.
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gistify.rendering import Rendering

HEIGHT = 48  # the recogniser's input height
STRIDE = 8  # px of input width per feature column
WIDTHS = {"backbone": 384, "neck": 120}
MODEL_FILE = "PP-OCRv6_rec_small.onnx"


class EncoderError(RuntimeError):
    """The encoder's model is not installed or not what we expect; the message says what to do."""


def model_path() -> Path:
    """The recognition model inside the installed `rapidocr` wheel (found without importing rapidocr)."""
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError("vist's encoder needs the wheel rapidocr: pip install rapidocr onnxruntime")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILE
    if not path.is_file():
        raise EncoderError(f"{path} is missing: reinstall rapidocr (pip install --force-reinstall --no-deps rapidocr)")
    return path


@dataclass(frozen=True)
class EncoderConfig:
    """Args:
    features: which features `encode` returns: "neck" (120-d, the CTC head's input: the characters, linearly)
        or "backbone" (384-d CNN features before the neck: more visual detail, less context).
    batch_size: rows per onnxruntime call (4: as fast as 16 on 2 cores, and onnxruntime's arena peaks at ~130 MB
        instead of ~470 MB: it grows to the largest batch's activations and keeps them).
    threads: onnxruntime intra-op threads (1: these machines are shared; a batch is cheap anyway).
    cache_mb: memory for cached features, in MB (0: no memory cache); a fold image's neck features take 0.75 MB.
    cache_dir: a folder for a persistent feature cache (one .npz per image), or None.
    """

    features: str = "neck"
    batch_size: int = 4
    threads: int = 1
    cache_mb: int = 512
    cache_dir: str | None = None

    def __post_init__(self):
        if self.features not in WIDTHS:
            raise ValueError(f"EncoderConfig.features must be one of {sorted(WIDTHS)}, got {self.features!r}")
        for name in ("batch_size", "threads"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"EncoderConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.cache_mb, int) or self.cache_mb < 0:
            raise ValueError(f"EncoderConfig.cache_mb must be an integer >= 0, got {self.cache_mb!r}")

    @property
    def width(self) -> int:
        return WIDTHS[self.features]


@dataclass
class Encoded:
    """The encoder's view of M images.

    features: (M, L, D) float32; mask: (M, L) bool, True for tokens that hold text; rows: R (L = R x T).
    ids / confidence: (M, L) the CTC head's best class and its probability per token (for `read`).
    """

    features: torch.Tensor
    mask: torch.Tensor
    ids: torch.Tensor
    confidence: torch.Tensor
    rows: int

    @property
    def tokens_per_image(self) -> int:
        return self.features.shape[1]


def feature_outputs(model, name: str = "the model") -> dict[str, str]:
    """{"backbone": ..., "neck": ...}: the names of the recogniser's feature tensors, found by structure."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    softmax = [n for n in g.node if n.op_type == "Softmax" and n.output[0] == g.output[0].name]
    # The neck's output is the data input of the CTC head: walk back from the softmax to the head's MatMul.
    head = softmax[0] if softmax else None
    while head is not None and head.op_type != "MatMul":
        head = producer.get(head.input[0])
    pools = [n for n in g.node if n.op_type == "AveragePool"]  # the backbone ends by pooling the height to 1
    if head is None or not pools:
        raise EncoderError(f"{name} does not have the PP-OCRv6 recogniser's structure (CNN, SVTR neck, CTC)")
    return {"backbone": pools[-1].output[0], "neck": head.input[0]}


def _graph(path: Path) -> tuple[bytes, list[str], list[str]]:
    """The recogniser with its backbone and neck features as outputs and the softmax replaced by argmax + max.

    Returns the serialised model and its character list (index 0 = CTC blank, last = space, as rapidocr builds it).
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    g = model.graph
    features = feature_outputs(model, path.name)
    probs = g.output[0].name
    g.node.append(helper.make_node("ArgMax", [probs], ["ctc_ids"], axis=2, keepdims=0))
    g.node.append(helper.make_node("ReduceMax", [probs], ["ctc_max"], axes=[2], keepdims=0))
    del g.output[:]
    names = features | {"ids": "ctc_ids", "confidence": "ctc_max"}
    for key, name in names.items():
        g.output.append(
            helper.make_tensor_value_info(name, TensorProto.INT64 if key == "ids" else TensorProto.FLOAT, None)
        )
    meta = {p.key: p.value for p in model.metadata_props}
    if "character" not in meta:
        raise EncoderError(f"{path.name} carries no character dictionary (metadata key 'character')")
    characters = ["<blank>", *meta["character"].splitlines(), " "]
    return model.SerializeToString(), list(names.values()), characters


class TextImageEncoder:
    """PP-OCRv6's recogniser as a frozen feature extractor for rendered text, with a content-keyed cache.

    encode(rendering) -> Encoded; read(rendering) -> the text of each row, by greedy CTC (a check that the
    pixels are legible, and that the features hold the text).
    """

    def __init__(self, config: EncoderConfig | None = None):
        self.config = config or EncoderConfig()
        self._memory: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self.stats = {"images": 0, "cached": 0, "rows": 0, "seconds": 0.0}

    @cached_property
    def _model(self):
        import onnxruntime as ort

        path = model_path()
        data, outputs, characters = _graph(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.config.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        # The file's hash versions the cache: another model never answers from this model's entries.
        fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return session, outputs, characters, fingerprint

    @property
    def characters(self) -> list[str]:
        return self._model[2]

    # -- pixels to the model's input --------------------------------------------------------------------------

    @staticmethod
    def rows_of(image: Image.Image, rows: int) -> np.ndarray:
        """(R, 3, 48, W') float32 model input: the image cut into `rows` rows, each scaled to 48 px high keeping
        its aspect (W' = W x 48 / row height, rounded to whole 8-px tokens), BGR, scaled to [-1, 1]."""
        width, height = image.size
        row_h = height // rows
        scaled = round(width * HEIGHT / row_h / STRIDE) * STRIDE
        out = np.empty((rows, 3, HEIGHT, scaled), dtype=np.float32)
        for r in range(rows):
            crop = image.crop((0, r * row_h, width, (r + 1) * row_h))
            if crop.size != (scaled, HEIGHT):
                crop = crop.resize((scaled, HEIGHT), Image.Resampling.BILINEAR)
            pixels = np.asarray(crop.convert("RGB"), dtype=np.float32)[:, :, ::-1]  # the model was trained on BGR
            out[r] = pixels.transpose(2, 0, 1) / 127.5 - 1.0
        return out

    # -- encoding ----------------------------------------------------------------------------------------------

    def _key(self, rendering: Rendering, i: int) -> str:
        return f"{rendering.key(i)}-{self._model[3]}-{self.config.features}"

    def _lookup(self, key: str) -> dict[str, np.ndarray] | None:
        hit = self._memory.get(key)
        if hit is not None:
            self._memory.move_to_end(key)
            return hit
        if self.config.cache_dir:
            path = Path(self.config.cache_dir) / f"{key}.npz"
            if path.is_file():
                with np.load(path) as f:
                    hit = {k: f[k] for k in f.files}
                self._remember(key, hit, write=False)
        return hit

    def _remember(self, key: str, value: dict[str, np.ndarray], write: bool = True) -> None:
        if self.config.cache_mb:
            self._memory[key] = value
            self._bytes += sum(v.nbytes for v in value.values())
            while self._bytes > self.config.cache_mb * 2**20:
                _, old = self._memory.popitem(last=False)
                self._bytes -= sum(v.nbytes for v in old.values())
        if write and self.config.cache_dir:
            folder = Path(self.config.cache_dir)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"{key}.tmp.npz"
            np.savez(tmp, **value)
            tmp.replace(folder / f"{key}.npz")  # atomic: a reader never sees half a file

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """(N, 3, 48, W) -> features (N, T, D), ids (N, T), confidence (N, T)."""
        session, outputs, _, _ = self._model
        backbone, neck, ids, conf = session.run(outputs, {"x": batch})
        features = backbone[:, :, 0, :].transpose(0, 2, 1) if self.config.features == "backbone" else neck
        # Only what `encode` returns is kept: the cache holds one feature width, and ids fit in int32.
        return {"features": np.ascontiguousarray(features), "ids": ids.astype(np.int32), "confidence": conf}

    def _encode_images(self, rendering: Rendering) -> list[dict[str, np.ndarray]]:
        """Per image, the model's outputs for its rows concatenated: each (L, ...) with L = R x T."""
        rows = rendering.layout.rows
        results: list[dict[str, np.ndarray] | None] = []
        todo = []
        for i in range(len(rendering)):
            hit = self._lookup(self._key(rendering, i))
            results.append(hit)
            if hit is None:
                todo.append(i)
        self.stats["images"] += len(rendering)
        self.stats["cached"] += len(rendering) - len(todo)
        if todo:
            t0 = time.perf_counter()
            # Pixels are made batch by batch: a whole long text's rows as float32 would be ~0.44 MB a row.
            per_run = max(1, self.config.batch_size // rows)  # images per run (at least one, whatever its rows)
            for s in range(0, len(todo), per_run):
                part = todo[s : s + per_run]
                out = self._run(np.concatenate([self.rows_of(rendering.images[i], rows) for i in part]))
                for j, i in enumerate(part):
                    value = {k: v[j * rows : (j + 1) * rows].reshape(-1, *v.shape[2:]).copy() for k, v in out.items()}
                    results[i] = value
                    self._remember(self._key(rendering, i), value)
                self.stats["rows"] += len(part) * rows
            self.stats["seconds"] += time.perf_counter() - t0
        return results

    def token_mask(self, rendering: Rendering) -> np.ndarray:
        """(M, L) bool: tokens with any text, from each row's recorded end of text (scaled like the row)."""
        lay = rendering.layout
        scale = HEIGHT / lay.row_height
        per_row = round(lay.width * scale / STRIDE)
        mask = np.zeros((len(rendering), lay.rows, per_row), dtype=bool)
        for r in rendering.rows:
            if not r.empty:
                mask[r.image, r.row, : min(per_row, int(np.ceil(r.end * scale / STRIDE)))] = True
        return mask.reshape(len(rendering), -1)

    @torch.no_grad()
    def encode(self, rendering: Rendering) -> Encoded:
        """The features of every image of `rendering`: (M, L, D) with its token mask (M, L)."""
        values = self._encode_images(rendering)
        return Encoded(
            features=torch.from_numpy(np.stack([v["features"] for v in values]).astype(np.float32, copy=False)),
            mask=torch.from_numpy(self.token_mask(rendering)),
            ids=torch.from_numpy(np.stack([v["ids"] for v in values])),
            confidence=torch.from_numpy(np.stack([v["confidence"] for v in values])),
            rows=rendering.layout.rows,
        )

    def decode(self, ids: np.ndarray | torch.Tensor) -> str:
        """Greedy CTC: merge repeats, drop blanks. ids: (T,) one row's best classes."""
        ids = np.asarray(ids)
        keep = np.ones(len(ids), dtype=bool)
        keep[1:] = ids[1:] != ids[:-1]
        chars = self.characters
        return "".join(chars[i] for i in ids[keep & (ids != 0)])

    def read(self, rendering: Rendering, encoded: Encoded | None = None) -> list[str]:
        """The text the encoder reads on each row of `rendering.rows` (same order), stripped."""
        encoded = encoded or self.encode(rendering)
        per_row = encoded.ids.shape[1] // encoded.rows
        ids = encoded.ids.reshape(len(rendering), encoded.rows, per_row)
        return [self.decode(ids[r.image, r.row]).strip() for r in rendering.rows]
