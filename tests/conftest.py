"""Shared fixtures: a tiny random-weight Llama scorer with a byte-level BPE tokenizer trained in memory
(fast, offline, exact), and real prose from tests/data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"


def prose(name: str = "aardwolf.txt") -> str:
    return (DATA / name).read_text(encoding="utf-8")


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
