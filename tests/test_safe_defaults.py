"""Safe by default (issue 26): meaning kept without asking, input checked before anything heavy, progress off a
terminal, a word over the budget cut inside, and the small defects found on the way."""

from __future__ import annotations

import json
import re
import time

import pytest

import gistify
import gistify.progress as progress
from gistify.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

CL100K = dict(tokenizer="cl100k_base")  # random and truncate need no scorer with it
INSTALL = (
    "The installer sets up the agent, its configuration and a service that starts at boot. Do NOT run the "
    "installer as root. It asks for the address of the collector and a token from the admin console. The "
    "token is valid for 24 hours. Once installed, the agent reports every minute to the collector."
)
WORD = "".join(f"{i:04d}abcdef" for i in range(500))[:5000]


# -- meaning kept by default (item 1) -----------------------------------------------------------------------------


def _inverted(r) -> bool:
    """ "run" kept from "Do NOT run the installer" while "NOT" was dropped."""
    start = INSTALL.index("NOT run")
    run = (start + 4, start + 7)
    kept = lambda s, e: any(a <= s and e <= b for a, b in r.kept_spans)  # noqa: E731
    return kept(*run) and not kept(start, start + 3)


def test_a_kept_clause_keeps_its_negation_by_default():
    raw = [gistify.compress(INSTALL, keep=0.3, method="random", seed=s, protect_negations=False, fallback="off",
                            **CL100K) for s in range(40)]  # fmt: skip
    assert sum(_inverted(r) for r in raw) >= 3  # the raw cut does invert it (seeds 12, 25, 26...): a real case
    for seed in range(40):
        r = gistify.compress(INSTALL, keep=0.3, method="random", seed=seed, **CL100K)
        assert not _inverted(r) and "NOT run the installer" in r.text


def test_the_fallback_repairs_at_the_same_budget_first():
    text = "Take 5 mg in the morning with water and 10 mg at night with food, every day for a week."
    for seed in (0, 1, 2):  # seeds whose raw cut drops a number from a clause it keeps
        raw = gistify.compress(text, keep=0.5, method="random", seed=seed, fallback="off", **CL100K)
        assert raw.risk["meaning_changed"] and any(c["kind"] == "number" for c in raw.risk["changed"])
        r = gistify.compress(text, keep=0.5, method="random", seed=seed, **CL100K)
        assert r.fell_back and r.fallback_step.startswith("compressed again at the same budget")
        assert not r.risk["meaning_changed"] and r.tokens_out <= r.target_tokens
        assert "5" in r.text.split() and "10" in r.text.split()
        assert re.search(r"fell back: number '\d+' dropped from a kept clause", r.notes[-1])
        assert f"within the budget of {r.target_tokens}" in r.notes[-1]


def test_fallback_steps_say_how_far_over_the_budget():
    text = "Do not open the valve. " * 2 + "Pressure is 40 bar at 20 degrees and 55 bar at 60 degrees today."
    r = gistify.compress(text, "What is the pressure at 60 degrees?", tokens=6, method="truncate", **CL100K)
    assert r.fell_back and not r.risk["meaning_changed"]
    if r.tokens_out > r.target_tokens:
        assert f"{r.tokens_out - r.target_tokens} over the budget of {r.target_tokens}" in r.notes[-1]
    off = gistify.compress(text, "What is the pressure at 60 degrees?", tokens=6, method="truncate", fallback="off",
                           **CL100K)  # fmt: skip
    assert not off.fell_back and off.tokens_out <= 6


def test_raw_cut_from_the_cli(tmp_path, capsys):
    doc = tmp_path / "install.txt"
    doc.write_text(INSTALL)
    argv = ["compress", str(doc), "--keep", "0.3", "-m", "random", "--tokenizer", "cl100k_base", "--json"]
    outs = []
    for seed in range(12):
        assert main([*argv, "--set", f"seed={seed}", "--no-protect-negations", "--fallback", "off"]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert all(not o["fell_back"] for o in outs) and all(o["protected"] == [] for o in outs)
    assert main([*argv]) == 0
    assert json.loads(capsys.readouterr().out)["protected"]  # the default protects the negated phrase


def test_risk_kinds_are_named_in_the_singular():
    from gistify.text.meaning import risk

    r = risk("We met Alice Smith in Paris on Monday.", "We met Alice in on Monday.")
    assert {c["kind"] for c in r["changed"]} <= {"number", "negation", "identifier", "entity"}
    assert "entity" in {c["kind"] for c in r["changed"]}


# -- input checked before anything heavy (item 2) -----------------------------------------------------------------


@pytest.fixture()
def no_model(monkeypatch):
    """Fail the test if a model or the scorer starts to load."""
    import gistify.models

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(gistify.models, "load", refuse)


def test_invalid_json_is_refused_before_the_model_loads(tmp_path, capsys, no_model):
    doc = tmp_path / "bad.json"
    doc.write_text('{"a": 1,\n "b": [1, 2,}\n')
    assert main(["compress", str(doc), "--structure", "json", "--keep", "0.3"]) == 2  # no_model: nothing loaded
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not valid JSON (Expecting value: line 2" in err and "--structure" in err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--keep", "1.5"], "`keep` must be"),
        (["--keep", "0.3", "--fallback", "0"], "fallback must be"),
        (["--keep", "0.3", "--max-risk", "3"], "max_risk must be"),
        (["--keep", "0.3", "--protect", "("], "not a valid regular expression"),
        (["--keep", "0.3", "--tokenizer", "p50k"], "unknown tokenizer"),
        (["--keep", "0.3", "-m", "nope"], "unknown method"),
        (["--keep", "0.3", "--set", "k=0"], "k"),
    ],
)
def test_bad_options_are_refused_before_the_model_loads(tmp_path, capsys, no_model, extra, message):
    doc = tmp_path / "doc.txt"
    doc.write_text(INSTALL)
    assert main(["compress", str(doc), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_file_that_contradicts_its_name_or_structure_gets_one_line(tmp_path, capsys):
    named = tmp_path / "notes.json"
    named.write_text(INSTALL)
    assert main(["compress", str(named), "--keep", "0.5", "-m", "random", "--tokenizer", "cl100k_base"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"note: .*notes\.json is named \.json but is not valid JSON \(.*\): compressed as text", err)
    data = tmp_path / "data.txt"
    data.write_text(json.dumps({"items": [{"name": f"item {i}", "text": INSTALL} for i in range(3)]}))
    argv = ["compress", str(data), "--keep", "0.5", "-m", "random", "--tokenizer", "cl100k_base"]
    assert main([*argv, "--structure", "markdown"]) == 0
    assert "is JSON, but --structure markdown" in capsys.readouterr().err
    assert main(argv) == 0
    assert "is JSON" not in capsys.readouterr().err  # auto: JSON found and kept valid, nothing to say


# -- progress off a terminal (item 3) -----------------------------------------------------------------------------


def test_progress_lines_off_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(progress, "DELAY", 0.05)
    monkeypatch.setattr(progress, "PERIOD", 0.05)
    with progress.progress_bar(6, "scoring", True, unit="windows") as advance:
        for _ in range(6):
            time.sleep(0.04)
            advance()
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("gistify: scoring ") for line in lines)
    assert re.search(r"scoring \d/6 windows, [\d.]+/s, 0:00 elapsed, (0:0\d left|time left unknown yet)", lines[0])
    assert lines[-1].startswith("gistify: scoring 6/6 windows, done in ")


def test_a_stage_of_one_step_says_it_is_alive(monkeypatch, capsys):
    monkeypatch.setattr(progress, "DELAY", 0.05)
    monkeypatch.setattr(progress, "PERIOD", 0.05)
    with progress.stage("loading the scorer", True):
        time.sleep(0.2)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "gistify: loading the scorer, 0:00 elapsed"
    assert lines[-1] == "gistify: loading the scorer, done in 0:00"


def test_a_big_input_is_announced_at_once(tmp_path, monkeypatch, capsys):
    import gistify.cli

    monkeypatch.setattr(gistify.cli, "BIG", 100)
    doc = tmp_path / "doc.txt"
    doc.write_text(INSTALL)
    argv = ["compress", str(doc), "--keep", "0.5", "-m", "random", "--tokenizer", "cl100k_base"]
    assert main(argv) == 0
    assert capsys.readouterr().err.startswith(f"gistify: {len(INSTALL):,} characters to compress")
    assert main([*argv, "--quiet"]) == 0 and "characters to compress" not in capsys.readouterr().err


def test_no_progress_for_short_work_or_when_quiet(monkeypatch, capsys):
    with progress.progress_bar(100, "quick", True) as advance:  # well under DELAY
        for _ in range(100):
            advance()
    monkeypatch.setattr(progress, "DELAY", 0.0)
    with progress.progress_bar(3, "quiet", False) as advance:
        time.sleep(0.05)
        advance()
    assert capsys.readouterr().err == ""


def test_the_cli_asks_for_progress_unless_quiet(tmp_path, monkeypatch, capsys):
    seen = []
    real = gistify.compress

    def spy(*a, **k):
        seen.append(k.get("progress"))
        return real(*a, **k)

    monkeypatch.setattr(gistify, "compress", spy)
    doc = tmp_path / "doc.txt"
    doc.write_text(INSTALL)
    argv = ["compress", str(doc), "--keep", "0.5", "-m", "random", "--tokenizer", "cl100k_base"]
    assert main(argv) == 0 and main([*argv, "--quiet"]) == 0
    assert seen == [True, False]


def test_compress_batch_progress_lines_off_a_terminal(tmp_path, monkeypatch, capsys):
    from gistify.batch import local

    monkeypatch.setattr(progress, "DELAY", 0.0)
    monkeypatch.setattr(progress, "PERIOD", 0.02)
    real = local._in_process

    def slow(*a, **k):
        for line in real(*a, **k):
            time.sleep(0.03)
            yield line

    monkeypatch.setattr(local, "_in_process", slow)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": INSTALL}) + "\n" for i in range(8)))
    argv = ["compress-batch", str(src), str(tmp_path / "out.jsonl"), "--keep", "0.5", "-m", "random",
            "--tokenizer", "cl100k_base"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert re.search(r"gistify: compressing \d/8 records, [\d.]+/s", err) and "compress-batch: 8 records" in err
    assert main([*argv[:2], str(tmp_path / "out2.jsonl"), *argv[3:], "--quiet"]) == 0
    assert "gistify: compressing" not in capsys.readouterr().err


# -- a word over the budget is cut inside (item 5) ----------------------------------------------------------------


@pytest.mark.parametrize("method,params", [("random", {}), ("truncate", {}), ("selfinfo", {})])
@pytest.mark.parametrize("before", ["", "Some words before. "])
def test_a_long_word_fills_the_budget_it_leaves(method, params, before, tiny_scorer):
    text = f"{before}{WORD} end."
    r = gistify.compress(text, keep=0.2, method=method, scorer=tiny_scorer, fallback="off", **params, **CL100K)
    assert r.target_tokens // 2 <= r.tokens_out <= r.target_tokens
    assert len(r.cut) == 1 and "cut inside" in " ".join(r.notes)
    s, e = r.cut[0]
    assert s == text.index(WORD) and s < e < s + len(WORD) and any(b == e for _, b in r.kept_spans)
    assert r.text == " ".join(text[a:b] for a, b in r.kept_spans)  # spans still rebuild the text


def test_show_marks_the_cut_and_puts_the_summary_on_stderr(tmp_path, capsys):
    doc = tmp_path / "doc.txt"
    doc.write_text(f"Some words before. {WORD} end.")
    argv = ["compress", str(doc), "--keep", "0.2", "-m", "random", "--tokenizer", "cl100k_base", "--show"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "[cut]" in out and "random: " not in out
    summary = [line for line in err.splitlines() if line.startswith("random: ")]
    assert len(summary) == 1 and "tokens (cl100k_base)" in summary[0] and len(summary[0]) > 80


def test_methods_verbose_gives_whole_sentences(capsys):
    assert main(["methods", "-v"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("reinforce-fast "))
    assert line.rstrip().endswith("(gistify.text.fast).")
    for name, description in gistify.methods().items():
        assert description.endswith((".", "!", "?")), name


def test_compress_batch_summary_counts_the_fallbacks(tmp_path, capsys):
    text = "Take 5 mg in the morning with water and 10 mg at night with food, every day for a week."
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i in range(3)))
    argv = ["compress-batch", str(src), str(tmp_path / "out.jsonl"), "--keep", "0.5", "-m", "random",
            "--tokenizer", "cl100k_base", "--set", "seed=1", "--quiet"]  # fmt: skip
    assert main(argv) == 0  # seed 1 drops a number from a kept clause (test_the_fallback_repairs...)
    assert "3 compressed records fell back to keep their meaning" in capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all(any(n.startswith("fell back") for n in r["notes"]) for r in rows)
    raw = [*argv[:2], str(tmp_path / "raw.jsonl"), *argv[3:], "--fallback", "off", "--no-protect-negations"]
    assert main(raw) == 0 and "fell back" not in capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "raw.jsonl").read_text().splitlines()]
    assert rows and not any(n.startswith("fell back") for r in rows for n in r["notes"])
    assert main([*argv[:2], str(tmp_path / "bad.jsonl"), *argv[3:], "--set", "fallback=sometimes"]) == 2
    assert "fallback must be" in capsys.readouterr().err and not (tmp_path / "bad.jsonl").exists()


@pytest.mark.real
def test_the_rest_of_a_clause_that_lost_its_number_goes_at_the_same_budget():
    """The negation corpus's travel rules at keep 0.3 (the real scorer): the same-budget repair cannot keep
    "6:30" beside six protected negations, so what was left of "Breakfast is served from [6:30] in the dining
    car" goes too: less said, nothing false, and the budget kept."""
    from gistify.text.pipeline import CLEARED
    from gistify_bench.benches.negations import documents, inverted

    text, items = documents()["travel"]
    r = gistify.compress(text, "Can tickets be bought on board?", keep=0.3)
    assert r.fallback_step == CLEARED and r.tokens_out <= r.target_tokens
    assert not r.risk["meaning_changed"] and not any(inverted(it, r.kept_spans) for it in items)
    assert "served from" not in r.text and "words kept around dropped numbers or negations" in " ".join(r.notes)
