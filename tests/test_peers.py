"""Peers run for real in their own environment (made by scripts/setup_peers.sh)."""

import pytest
from conftest import prose

from gistify_bench.peers import lingua
from gistify_bench.reader import Reader

pytestmark = pytest.mark.real


def test_transformers4_model_dir_keeps_the_weights_and_merges():
    import json

    d = lingua.model_dir_for_transformers4()
    config = json.loads((d / "config.json").read_text())
    assert config["rope_theta"] > 0 and "rope_parameters" not in config
    merges = json.loads((d / "tokenizer.json").read_text())["model"]["merges"]
    assert all(isinstance(m, str) and " " in m for m in merges[:100])
    assert (d / "model.safetensors").resolve().stat().st_size > 100e6


@pytest.mark.parametrize("mode", lingua.MODES)
def test_llmlingua_modes_compress_for_real(mode):
    reader = Reader.load()
    run = lingua.compressor(mode, reader)
    text = prose("ampere.txt")[:3000]
    c = run(text, "What is the SI unit of electric current?", 0.3)
    assert 0 < c.tokens_out < 0.6 * c.tokens_in and c.seconds > 0
    assert c.text and "What is the SI unit" not in c.text  # the question is not appended to the context


def test_unknown_mode():
    with pytest.raises(ValueError, match="longllmlingua"):
        lingua.compressor("lingua3", None)
