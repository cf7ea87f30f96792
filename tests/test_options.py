"""The text options are declared once (gistify.text.options.TextOptions) and every surface takes them: the
`compress` and `compress-batch` flags, the proxy's settings and flags, compress-batch's job and the LangChain /
LlamaIndex wrappers. A field says where it cannot apply, and why (`fixed`); everywhere else it must be taken.

The last test adds a field to a copy of the library's source, as a developer would, and follows it from each
surface to the pipeline: adding an option is one field (and its use)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import INTEGRATIONS_TEST, need
from gistify.cli import build_parser
from gistify.text.options import SURFACES, TextOptions, parse_sets, pipeline_options

SRC = Path(__file__).resolve().parents[1] / "src"
FIELDS = [f.name for f in dataclasses.fields(TextOptions)]


def _dests(parser) -> set[str]:
    return {a.dest for a in parser._actions}


def _subparser(name: str):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices[name]


def _takes(field: str, surface: str) -> bool:
    return surface not in TextOptions.__dataclass_fields__[field].metadata["fixed"]


def test_every_field_has_help_a_check_and_reasons_where_it_does_not_apply():
    for f in dataclasses.fields(TextOptions):
        assert f.metadata["help"], f.name
        assert set(f.metadata["fixed"]) <= set(SURFACES), f.name
        assert all(why for why in f.metadata["fixed"].values()), f.name
        assert f.metadata["check"], f.name


@pytest.mark.parametrize("command", ["compress", "compress-batch", "serve"])
def test_every_option_is_a_flag(command):
    dests = _dests(_subparser(command))
    assert {f for f in FIELDS if _takes(f, command)} <= dests
    assert not {f for f in FIELDS if not _takes(f, command)} & dests  # no flag that would be ignored


def test_the_flags_map_back_to_the_options():
    p = build_parser()
    args = p.parse_args(
        ["compress", "x.txt", "--tokens", "40", "-m", "random", "--set", "seed=3", "--set", "fallback=off",
         "--protect", "a+", "--no-protect-negations", "--structure", "off", "--max-risk", "0.5"]
    )  # fmt: skip
    o = TextOptions.from_args(args)
    assert o == TextOptions(tokens=40, method="random", params={"seed": 3}, protect=("a+",), protect_negations=False,
                            structure="off", fallback="off", max_risk=0.5)  # fmt: skip
    assert o.compress_kwargs() == {"method": "random", "seed": 3, "protect": ("a+",), "protect_negations": False,
                                   "structure": "off", "fallback": "off", "max_risk": 0.5}  # fmt: skip
    assert TextOptions.from_args(p.parse_args(["compress", "x.txt", "--keep", "0.5"])) == TextOptions(keep=0.5)


def test_the_proxy_settings_are_the_options_with_its_own_defaults():
    from gistify.serve.settings import Settings

    names = {f.name for f in dataclasses.fields(Settings)}
    assert set(FIELDS) <= names
    s = Settings()
    proxy = (s.keep, s.protect_numbers, s.protect_negations, s.protect_identifiers, s.max_risk)
    assert proxy == (0.5, True, True, True, 0.2)
    args = build_parser().parse_args(["serve", "--upstream", "http://127.0.0.1:9", "--set", "seed=2", "-m", "random",
                                      "--tokenizer", "cl100k_base", "--no-protect-numbers"])  # fmt: skip
    s = Settings.from_args(args)
    assert (s.method, s.params, s.tokenizer, s.protect_numbers, s.keep) == ("random", {"seed": 2}, "cl100k_base",
                                                                             False, 0.5)  # fmt: skip
    for name in FIELDS:
        why = TextOptions.__dataclass_fields__[name].metadata["fixed"].get("serve")
        if why:  # an option the proxy picks per content is refused, not ignored
            with pytest.raises(ValueError, match=f"the proxy takes no {name}"):
                Settings(**{name: {"json_minify": True, "on_protected_overflow": "trim", "fallback": "off"}[name]})


def test_batch_and_the_wrappers_take_every_option():
    from gistify.batch.records import Settings as JobSettings

    assert isinstance(JobSettings().text, TextOptions)
    lc = need("gistify.integrations.langchain", install=INTEGRATIONS_TEST)
    li = need("gistify.integrations.llamaindex", install=INTEGRATIONS_TEST)
    for wrapper in (lc.GistifyCompressor, li.GistifyPostprocessor):
        assert set(FIELDS) <= set(wrapper.model_fields), wrapper
        w = wrapper(tokens=30, method="random", params={"seed": 2}, protect_numbers=True, fallback="off")
        assert w.options() == TextOptions(
            tokens=30, method="random", params={"seed": 2}, protect_numbers=True, fallback="off"
        )
        with pytest.raises(ValueError, match="structure must be one of"):
            wrapper(keep=0.5, structure="xml")


def test_one_name_value_parser():
    assert parse_sets(["seed=3", "side=tail", "k = 0.5", "on=True"]) == {
        "seed": 3,
        "side": "tail",
        "k": 0.5,
        "on": True,
    }
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_sets(["seed"])
    from gistify_bench.eval.cli import with_params

    assert with_params("reinforce[recency=0;k=4]") == ("reinforce", parse_sets(["recency=0", "k=4"]))


def test_the_pipeline_refuses_an_option_it_does_not_know():
    from gistify.text.pipeline import compress_text
    from gistify.text.truncate import Truncate

    assert "shout" not in pipeline_options()
    with pytest.raises(ValueError, match="has no option shout"):
        compress_text(Truncate(), "one two three", keep=0.5, tokenizer="cl100k_base", shout=True)


# the new option, declared as the others are, just before the checks of the dataclass
NEW_FIELD = '    shout: bool = option(False, "a test option: upper-case the output", _flag("shout"))\n'
SPY = r"""
import json, sys
from pathlib import Path

import gistify.text.base as base

seen = {}
real = base.compress_text


def spy(m, text, question=None, **kw):
    seen[SURFACE] = kw.get("shout")
    return real(m, text, question, **kw)


base.compress_text = spy
tmp, model = Path(sys.argv[1]), sys.argv[2]
doc = tmp / "doc.txt"
doc.write_text("The snow was fresh and the albedo was high, near 0.9 on the slopes. " * 4)
common = ["--keep", "0.5", "-m", "truncate", "--tokenizer", "cl100k_base", "--shout"]

from gistify.cli import build_parser, main

SURFACE = "compress"
assert main(["compress", str(doc), *common]) == 0
SURFACE = "compress-batch"
(tmp / "in.jsonl").write_text(json.dumps({"id": 1, "text": doc.read_text()}) + "\n")
assert main(["compress-batch", str(tmp / "in.jsonl"), str(tmp / "out.jsonl"), *common, "--quiet"]) == 0

import gistify
from gistify.serve.policy import Compressor
from gistify.serve.settings import Settings

SURFACE = "serve"
scorer = gistify.Scorer.load(model)
settings = Settings.from_args(build_parser().parse_args(["serve", "--upstream", "http://127.0.0.1:9", *common]))
Compressor(settings, scorer)._compress(doc.read_text(), "What albedo?", [], "prose")

from langchain_core.documents import Document
from gistify.integrations.langchain import GistifyCompressor

SURFACE = "langchain"
GistifyCompressor(keep=0.5, method="truncate", tokenizer="cl100k_base", shout=True, scorer=scorer).compress_documents(
    [Document(page_content=doc.read_text())], "What albedo?"
)
print("SEEN", json.dumps(seen))
"""


def test_a_new_option_is_one_field_and_reaches_every_surface(tmp_path, tiny_model_dir):
    need("langchain_core", install=INTEGRATIONS_TEST)
    copy = tmp_path / "src"
    shutil.copytree(SRC / "gistify", copy / "gistify", ignore=shutil.ignore_patterns("__pycache__"))
    options = copy / "gistify/text/options.py"
    source = options.read_text()
    anchor = "    def __post_init__(self):\n"
    assert source.count(anchor) == 1
    options.write_text(source.replace(anchor, NEW_FIELD + "\n" + anchor))
    env = {**os.environ, "PYTHONPATH": str(copy), "GISTIFY_DEBUG": "1"}
    out = subprocess.run(
        [sys.executable, "-c", SPY, str(tmp_path), str(tiny_model_dir)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.split("SEEN ", 1)[1])
    assert seen == {"compress": True, "compress-batch": True, "serve": True, "langchain": True}
