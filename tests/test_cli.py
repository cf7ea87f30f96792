"""The `gistify` command: outputs, exit codes, and that input files are never changed."""

import hashlib
import json

import pytest

from conftest import prose
from gistify import models
from gistify.cli import main


@pytest.fixture()
def doc(tmp_path):
    p = tmp_path / "doc.txt"
    p.write_text(prose()[:2500], encoding="utf-8")
    return p


def digest(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_compress_prints_text_and_summary(doc, tiny_model_dir, capsys):
    before = digest(doc)
    code = main(
        ["compress", str(doc), "-q", "What do aardwolves eat?", "--keep", "0.3", "--model", str(tiny_model_dir)]
    )
    out, err = capsys.readouterr()
    assert code == 0 and out.strip() and len(out) < len(doc.read_text())
    # the default method; the tiny model has no surprisal head, so the full pass scored it, and the summary says so
    assert "reinforce-fast:" in err and "kept 0.30" in err and "full pass scored instead of the fast path" in err
    assert digest(doc) == before


def test_compress_json_and_show(doc, tiny_model_dir, capsys):
    assert (
        main(
            [
                "compress",
                str(doc),
                "--tokens",
                "100",
                "-m",
                "random",
                "--set",
                "seed=3",
                "--json",
                "--model",
                str(tiny_model_dir),
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "random" and result["params"] == {"seed": 3} and result["target_tokens"] == 100
    src = doc.read_text()
    assert all(src[s:e] in result["text"] for s, e in result["kept_spans"])
    assert (
        main(
            [
                "compress",
                str(doc),
                "--keep",
                "0.2",
                "-m",
                "truncate",
                "--set",
                "side=tail",
                "--show",
                "--model",
                str(tiny_model_dir),
            ]
        )
        == 0
    )
    shown, err = capsys.readouterr()
    assert "~~" in shown and "truncate:" not in shown  # off a terminal, dropped text is marked ~~so~~
    assert err.startswith("truncate: ")  # the summary on stderr, whole (issue 26)


def test_stdin(monkeypatch, tiny_model_dir, capsys):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(prose()[:800].encode())))
    assert main(["compress", "-", "--keep", "0.5", "-m", "random", "--model", str(tiny_model_dir)]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize(
    "content,args,message",
    [
        (b"", ["--keep", "0.5"], "is empty"),
        (b"  \n\t\n", ["--keep", "0.5"], "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", ["--keep", "0.5"], "looks binary"),
        ("caf\u00e9 latin-1".encode("latin-1"), ["--keep", "0.5"], "not UTF-8"),
        (b"some words here", ["--keep", "1.5"], "(0, 1]"),
        (b"some words here", ["--keep", "0"], "(0, 1]"),
        (b"some words here", ["--tokens", "0"], ">= 1"),
        (
            b"some words here",
            ["--keep", "0.5", "-m", "nosuch"],
            "methods that compress text: random, reinforce, reinforce-fast, reinforce-rl, reinforce-shallow, selfinfo, "
            "truncate, vist",
        ),
        (b"some words here", ["--keep", "0.5", "--set", "seed"], "NAME=VALUE"),
        (b"some words here", ["--keep", "0.5", "--tokenizer", "gpt9"], "unknown tokenizer"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_file_unchanged(tmp_path, tiny_model_dir, capsys, content, args, message):
    p = tmp_path / "in.txt"
    p.write_bytes(content)
    argv = ["compress", str(p), *args, "--model", str(tiny_model_dir)]
    code = main(argv if "-m" in args else [*argv, "-m", "random"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("gistify: error:") and message in err and err.count("\n") == 1
    assert p.read_bytes() == content


def test_missing_file_and_usage(capsys):
    assert main(["compress", "/no/such/file.txt", "--keep", "0.5"]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["compress", "x.txt"])  # neither --keep nor --tokens
    assert e.value.code == 2


def test_tokens_above_length_returns_unchanged_with_note(doc, tiny_model_dir, capsys):
    assert main(["compress", str(doc), "--tokens", "100000", "-m", "random", "--model", str(tiny_model_dir)]) == 0
    out, err = capsys.readouterr()
    assert out == doc.read_text() + ("" if doc.read_text().endswith("\n") else "\n")
    assert "returned unchanged" in err


def test_model_that_does_not_load_exits_3(doc, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    assert main(["compress", str(doc), "--keep", "0.5", "--model", str(broken)]) == 3
    err = capsys.readouterr().err
    assert "could not load model" in err and err.count("\n") == 1
    assert main(["compress", str(doc), "--keep", "0.5", "--model", str(tmp_path / "absent")]) == 3
    assert "no such directory" in capsys.readouterr().err


def test_uncached_embedded_model_says_which_command_to_run(doc, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GISTIFY_HOME", str(tmp_path / "empty-home"))
    models.load.cache_clear()
    from gistify.text.pipeline import shared_scorer

    shared_scorer.cache_clear()
    try:
        assert main(["compress", str(doc), "--keep", "0.5"]) == 3
        assert "run: gistify models fetch smollm2-135m-instruct" in capsys.readouterr().err
        assert main(["models"]) == 0
        out = capsys.readouterr().out
        assert "smollm2-135m-instruct" in out and "not cached" in out and "Apache-2.0" in out
    finally:
        models.load.cache_clear()
        shared_scorer.cache_clear()


def test_methods_listing(capsys):
    assert main(["methods", "-v"]) == 0
    out = capsys.readouterr().out
    for name in ["reinforce", "selfinfo", "random", "truncate"]:
        assert name in out
    assert "alpha = 0.85" in out and "seed = 0" in out
