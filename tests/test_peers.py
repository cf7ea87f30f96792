"""Peers run for real in their own environment (made by scripts/setup_peers.sh, with the main venv's torch).
Without that environment a peer's test skips, or under CI fails, naming the command (conftest.missing)."""

import math

import pytest

from conftest import PEERS, missing, prose
from gistify_bench.eval.peers import kv_presses, lingua
from gistify_bench.eval.reader import Reader
from gistify_bench.eval.registry import get_task
from gistify_bench.eval.runner import Compression, run_cell
from gistify_bench.eval.task import Example, Task

pytestmark = pytest.mark.real


def need_env(python, name: str) -> None:
    if not python.is_file():
        missing(f"the {name} environment ({python.parent.parent})", PEERS)


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
    need_env(lingua.python(), "llmlingua")
    reader = Reader.load()
    run = lingua.compressor(mode, reader)
    text = prose("ampere.txt")[:3000]
    c = run(text, "What is the SI unit of electric current?", 0.3)
    assert 0 < c.tokens_out < 0.6 * c.tokens_in and c.seconds > 0
    assert c.text and "What is the SI unit" not in c.text  # the question is not appended to the context


def test_unknown_mode():
    with pytest.raises(ValueError, match="longllmlingua"):
        lingua.compressor("lingua3", None)


def test_longllmlingua_without_a_question_says_so_before_starting_a_worker():
    with pytest.raises(lingua.PeerError, match="needs a question"):
        lingua.compressor("longllmlingua", None)("some context", "  ", 0.5)


# kvpress presses: real ones in the kvpress environment, and the prompt split on the tiny fixtures.


@pytest.fixture()
def kvpress_env():
    need_env(kv_presses.python(), "kvpress")


NEEDLE_Q = "What is the special magic number for jagged-kestrel mentioned in the text?"


@pytest.fixture(scope="module")
def smollm2():
    return Reader.load()


def needle_context() -> str:
    paras = prose("aardwolf.txt")[:1400].split("\n")
    paras.insert(len(paras) // 2, "One of the special magic numbers for jagged-kestrel is: 3704162.")
    return "\n".join(paras)


@pytest.mark.usefixtures("kvpress_env")
@pytest.mark.parametrize("name", kv_presses.PRESSES)
def test_kvpress_halves_the_context_cache(smollm2, name):
    run = kv_presses.compressor(name, smollm2)
    context = needle_context()
    c = run(context, NEEDLE_Q, 0.5)
    assert (c.text, c.tokens_out, c.seconds) == (context, math.ceil(c.tokens_in / 2), 0.0)
    message = Task.prompt(None, context, NEEDLE_Q)
    a = run.reader.answer(message, max_new_tokens=8)
    ids = smollm2.encode(message)
    h, s = kv_presses.split_prompt(smollm2, ids, message, context)
    assert smollm2.tokenizer.decode(ids[h:s]) == context and smollm2.tokenizer.decode(ids[:h]).endswith("user\n")
    assert a["kv_prefix"] == s and a["kv_kept"] - h == pytest.approx(c.tokens_in / 2, abs=2)
    assert isinstance(a["text"], str) and a["text"] and a["prefill_s"] > 0 and a["prompt_tokens"] > s


@pytest.mark.usefixtures("kvpress_env")
def test_kvpress_nll_at_keep_1_is_the_readers(smollm2):
    text = prose("ampere.txt")
    context, continuation = text[:1500], text[1500:1800]
    run = kv_presses.compressor("kvpress-snapkv", smollm2)
    run(context, "", 1.0)
    got, want = run.reader.continuation_nll(context, continuation), smollm2.continuation_nll(context, continuation)
    assert got["nll"] == pytest.approx(want["nll"], abs=1e-3)
    assert (got["tokens"], got["prompt_tokens"]) == (want["tokens"], want["prompt_tokens"])
    assert got["kv_kept"] == got["kv_prefix"] == want["prompt_tokens"] - want["tokens"]


def test_prompt_split_at_the_end_of_the_context(tiny_model, tiny_tokenizer):
    reader = Reader(tiny_model, tiny_tokenizer, "tiny")
    context = prose()[:600]
    message = Task.prompt(None, context, "What do aardwolves eat?")
    ids = reader.encode(message, chat=False)
    h, s = kv_presses.split_prompt(reader, ids, message, context)
    assert h == 1 and ids[0] == tiny_tokenizer.bos_token_id  # only BOS comes before the context
    assert tiny_tokenizer.decode(ids[h:s]) == context and tiny_tokenizer.decode(ids[s:]) == message[600:]
    # a context that ends inside a word: the token across its end is left unpressed, with what follows
    h, s = kv_presses.split_prompt(reader, ids, message, context[:-3])
    pressed = tiny_tokenizer.decode(ids[h:s])
    assert context[:-3].startswith(pressed) and len(pressed) < 597
    with pytest.raises(lingua.PeerError, match="starts with the example's context"):
        kv_presses.split_prompt(reader, ids, message, "not the context")


def test_kvpress_reader_never_presses_a_context_it_was_not_given(tiny_model, tiny_tokenizer):
    run = kv_presses.compressor("kvpress-knorm", Reader(tiny_model, tiny_tokenizer, "tiny"))
    with pytest.raises(lingua.PeerError):
        run.reader.answer(Task.prompt(None, "a context", "a question?"), chat=False)
    with pytest.raises(ValueError, match="kvpress-tova"):
        kv_presses.compressor("kvpress-h2o", None)


def test_runner_reads_with_the_peers_reader(tmp_path, tiny_model, tiny_tokenizer):
    class PeerReader:
        name = "tiny"

        def answer(self, message, max_new_tokens=32, chat=True):
            return {"text": "termites", "prompt_tokens": 3, "prefill_s": 0.5, "decode_s": 0.1}

    def peer(context, question, keep):
        return Compression(context, 10, 5, 0.0)

    peer.reader = PeerReader()
    task, ex = get_task("needle-single-1k"), Example("e", "aardwolves eat termites", "What?", ["termites"])
    m = run_cell(task, "t", [ex], "peer", 0.5, peer, Reader(tiny_model, tiny_tokenizer, "tiny"), tmp_path, None)
    assert m["accuracy"] == 1.0 and m["prefill_s_median"] == 0.5 and m["keep_ratio"] == 0.5
