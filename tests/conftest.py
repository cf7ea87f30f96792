"""Shared fixtures: a tiny random-weight Llama scorer with a byte-level BPE tokenizer trained in memory
(fast, offline, exact), and real prose from tests/data; and `need`/`missing`, the one way a test says that
something setup installs is not there."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"

# What installs each part of the test set-up (scripts/setup_bench.sh runs all of them)
SETUP = "bash scripts/setup_bench.sh"
SERVE_TEST = ".venv/bin/python -m pip install -e '.[serve-test]'"
INTEGRATIONS_TEST = ".venv/bin/python -m pip install -e '.[integrations-test]'"
PEERS = "bash scripts/setup_peers.sh"
CJK_FONT = "apt-get install fonts-wqy-microhei"
REDIS = "apt-get install redis-server"


def under_ci() -> bool:
    """CI=true (or any value but empty, 0, false): setup has installed everything, so nothing may be missing."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(what: str, install: str):
    """`what` is not installed: the test skips, or under CI fails; either way the message says how to install it."""
    message = f"{what} is missing; install it with: {install} (all of the test set-up: {SETUP})"
    if under_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def need(*modules: str, install: str):
    """Import `modules` for a test (the last is returned); one that does not import is `missing`, naming `install`."""
    module = None
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            missing(f"{name} ({e})", install)
    return module


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(*modules, install): the test imports these modules (see `need`)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """A module's `needs` mark is checked before any fixture starts a server or loads a model for it."""
    for mark in item.iter_markers("needs"):
        need(*mark.args, **mark.kwargs)


def prose(name: str = "aardwolf.txt") -> str:
    return (DATA / name).read_text(encoding="utf-8")


def assert_spans_rebuild(src: str, spans, out: str) -> None:
    """`out` is exactly the source spans `spans`, in order, joined by whitespace taken from the gaps between them
    (no whitespace where the gap has none): the text contract of every compression."""
    spans = [tuple(s) for s in spans]
    assert spans == sorted(spans) and all(0 <= s < e <= len(src) for s, e in spans)
    assert all(e1 < s2 for (_, e1), (s2, _) in zip(spans, spans[1:])), "spans overlap or touch"
    pos = 0
    for i, (s, e) in enumerate(spans):
        if i:
            sep = re.match(r"\s*", out[pos:]).group()
            gap = src[spans[i - 1][1] : s]
            assert sep in gap and (sep or not re.search(r"\s", gap)), "separator is not whitespace from the gap"
            pos += len(sep)
        assert out[pos : pos + e - s] == src[s:e]
        pos += e - s
    assert pos == len(out)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module on one thread: its tensors are small, and with two threads on a busy 2-core machine OpenMP's
    waits make index_add_ and masked indexing ~1000x slower (130 ms instead of 20 us)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tk.train_from_iterator([p.read_text(encoding="utf-8") for p in sorted(DATA.glob("*.txt"))], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>")


def tiny_llama(tokenizer, **config):
    """A fresh tiny random-weight Llama (seeded) over `tokenizer`'s vocabulary; `config` overrides its sizes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=4096)  # fmt: skip
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, **(sizes | config))
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    return tiny_llama(tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_head(tiny_model, tmp_path_factory):
    """A seeded random surprisal head for the tiny Llama's layer 4, so that `reinforce-fast` runs on it."""
    from gistify.text.fast import SurprisalHead, fingerprint, save_head

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-head") / "head.safetensors"
    meta = {"model": "tiny", "fingerprint": fingerprint(tiny_model), "layer": 4, "hidden": 32, "width": 16}
    save_head(SurprisalHead(32, 16), path, meta)
    return path


@pytest.fixture()
def tiny_scorer(tiny_model, tiny_tokenizer, tiny_head):
    from gistify import Scorer

    # A small window so that tests cross window boundaries.
    return Scorer(tiny_model, tiny_tokenizer, window=96, context=16, head=tiny_head)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model, tiny_tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path
