"""The harness on tiny models: scoring, records, resumption, reports."""

import json

import pytest

from conftest import prose
from gistify_bench.eval import report
from gistify_bench.eval.reader import Reader
from gistify_bench.eval.runner import run
from gistify_bench.eval.task import TASKS, Example, Task, found, normalize, register


class ToyTask(Task):
    name = "toy"
    max_new_tokens = 4

    def examples(self, n, seed=0):
        text = prose()[:1200]
        return [
            Example(id=f"{seed}-{i}", context=text[i * 50 :], question="What do aardwolves eat?", answers=["termites"])
            for i in range(n)
        ]


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    if "toy" not in TASKS:
        register("toy", ToyTask())


@pytest.fixture()
def reader(tiny_model, tiny_tokenizer):
    return Reader(tiny_model, tiny_tokenizer, "tiny")


def test_scoring_normalises_and_counts_values():
    assert normalize("It is 3,704,162!  Yes.") == "it is 3,704,162 yes"
    assert found(["3704162"], "The number is: 3704162.", False) == 1.0
    assert found(["370416"], "The number is 3704162", False) == 0.0  # whole words only
    assert found(["1", "2", "3", "4"], "values 1 and 3", True) == 0.5


def test_base_model_reader_is_asked_in_completion_format(reader, tiny_tokenizer, monkeypatch):
    assert not reader.has_chat_template  # the tiny tokenizer, like Gemma 3 270M base, has none
    ids = reader.encode("Context.\nQuestion: why?", chat=True)
    assert tiny_tokenizer.decode(ids[1:]) == "Context.\nQuestion: why?\nAnswer:"
    assert tiny_tokenizer.decode(reader.encode("Sentence: x", chat=False)[1:]) == "Sentence: x"
    # The answer ends at the first newline after it starts (a base model goes on with a new "Question:").
    script = iter(tiny_tokenizer(" 42\nQuestion: more", add_special_tokens=False).input_ids)
    real_forward = reader.model.forward

    def scripted(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        out.logits[..., :] = 0
        out.logits[0, -1, next(script)] = 1
        return out

    monkeypatch.setattr(reader.model, "forward", scripted)
    assert reader.answer("Q?", max_new_tokens=20)["text"] == "42"


def test_run_writes_records_metrics_and_resumes(tmp_path, reader, tiny_scorer, monkeypatch):
    def go(methods, keeps):
        return run("toy", methods, keeps, 3, tmp_path, reader=reader, show_progress=False, scorer=tiny_scorer)

    cells = go(["random", "truncate"], [0.5, 0.2])
    assert [(c["method"], c["keep"]) for c in cells] == [
        ("none", 1.0),
        ("random", 0.5),
        ("random", 0.2),
        ("truncate", 0.5),
        ("truncate", 0.2),
    ]
    path = tmp_path / "text/toy/tiny/random/keep=0.2/records.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in recs] == ["0-0", "0-1", "0-2"]
    for r in recs:
        assert abs(r["tokens_out"] - 0.2 * r["tokens_in"]) <= 2 and r["agreement"] in (0.0, 1.0)
        assert r["survival"] in (0.0, 1.0) and r["prefill_s"] > 0
    none = cells[0]
    assert none["keep_ratio"] == 1.0 and none["survival"] == 1.0 and none["agreement"] is None
    assert cells[2]["keep_ratio"] == pytest.approx(sum(r["keep_ratio"] for r in recs) / 3)

    # a second run computes nothing new: every record is already there, and the cells keep the machine that
    # measured them (a resumed run on another machine must not re-stamp them)
    metrics = tmp_path / "text/toy/tiny/random/keep=0.2/metrics.json"
    metrics.write_text(json.dumps(json.loads(metrics.read_text()) | {"machine": "the first machine"}))
    calls = []
    monkeypatch.setattr(reader, "answer", lambda *a, **k: calls.append(a) or {})
    go(["random", "truncate"], [0.5, 0.2])
    assert calls == []
    assert json.loads(metrics.read_text())["machine"] == "the first machine"
    monkeypatch.undo()
    # an interrupted cell resumes where it stopped
    path = tmp_path / "text/toy/tiny/truncate/keep=0.5/records.jsonl"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    go(["truncate"], [0.5])
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["0-0", "0-1", "0-2"]


def test_contexts_beyond_the_readers_window_run_compressed_only(tmp_path, reader, tiny_scorer, monkeypatch, capsys):
    """needle-*-16k is longer than SmolLM2's 8,192 positions: the uncompressed cell is skipped, with a note."""
    from gistify_bench.eval.runner import reader_window

    monkeypatch.setattr(reader.model.config, "max_position_embeddings", 8)
    assert reader_window(reader) == 8
    cells = run("toy", ["truncate"], [0.5], 2, tmp_path, reader=reader, show_progress=False, scorer=tiny_scorer)
    assert [(c["method"], c["keep"]) for c in cells] == [("truncate", 0.5)]
    assert not (tmp_path / "text/toy/tiny/none").exists() and "no uncompressed baseline" in capsys.readouterr().err


def test_report_table_and_plot(tmp_path, reader, tiny_scorer):
    run("toy", ["random"], [0.5], 2, tmp_path, reader=reader, show_progress=False, scorer=tiny_scorer)
    md, png = report.write(tmp_path)["text"]
    table = md.read_text()
    assert (
        "### toy (reader tiny, n=2; score = accuracy)" in table
        and "| none | 1 |" in table
        and "| random | 0.5 |" in table
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| toy (tiny, n=2) | uncompressed |" in table and "Machine: " in table
    assert "95% interval" in table  # every cell's score comes with its bootstrap interval over the examples
    with pytest.raises(ValueError, match="no results"):
        report.write(tmp_path / "empty")


def test_goal_check_compares_with_both_peers_and_the_uncompressed_score():
    def cell(method, keep, acc, speed=1.0):
        return {
            "task": "qa-1k",
            "reader": "r",
            "method": method,
            "keep": keep,
            "accuracy": acc,
            "n": 4,
            "compress_s_per_1k": speed,
        }

    cells = {
        ("qa-1k", "r"): [
            cell("none", 1.0, 0.8),
            cell("reinforce", 0.33, 0.7, 2.0),
            cell("llmlingua", 0.33, 0.5),
            cell("longllmlingua", 0.33, 0.75, 3.0),
            cell("reinforce", 0.1, 0.76, 2.0),
        ]
    }
    checks = report.text.goal_check(cells)
    assert "pass: qa-1k (r) keep 0.1: reinforce keeps 95% of the uncompressed score" in checks
    assert not any("keep 0.1" in c for c in report.text.goal_check(cells, "reinforce-fast"))
    assert "pass: qa-1k (r) keep 0.33: reinforce 0.70 vs llmlingua 0.50" in checks
    assert "FAIL: qa-1k (r) keep 0.33: reinforce 0.70 vs longllmlingua 0.75" in checks
    assert "FAIL: qa-1k (r) keep 0.33: reinforce keeps 87% of the uncompressed score" in checks
    assert "pass: qa-1k (r): reinforce 2.00 s/1k tokens vs longllmlingua 3.00 (same run)" in checks


def test_unknown_task_lists_known():
    from gistify_bench.eval.registry import get_task

    with pytest.raises(ValueError, match="needle-single-1k"):
        get_task("nope")


@pytest.mark.real
@pytest.mark.parametrize("kind", ["single", "multikey", "multivalue"])
def test_needle_examples_on_real_prose(kind):
    from gistify.models import load
    from gistify_bench.eval.registry import get_task

    task = get_task(f"needle-{kind}-1k")
    examples = task.examples(2, seed=5)
    assert examples == task.examples(2, seed=5)  # deterministic
    _, tok = load(None)
    for ex in examples:
        n = len(tok(ex.context, add_special_tokens=False).input_ids)
        assert 800 < n <= 1024 + 40 * len(ex.meta["values"])
        assert all(
            f"special magic numbers for {k} is: {v}." in ex.context for k, v in zip(ex.meta["keys"], ex.meta["values"])
        )
        assert ex.meta["keys"][0] in ex.question and task.survival(ex, ex.context) == 1.0
        assert len(ex.answers) == (4 if kind == "multivalue" else 1)
        assert len(set(ex.meta["keys"])) == (1 if kind != "multikey" else 4)


@pytest.mark.real
def test_needle_dev_split_shares_no_article_with_the_benchmark():
    """experiments/reinforce_needle_dev.py builds its needles on the "train" articles; the benchmark's are "eval"."""
    from gistify_bench.data import wikipedia
    from gistify_bench.eval.tasks.needle import Needle

    train, evaluation = wikipedia("train"), wikipedia("eval")
    assert not set(train) & set(evaluation)
    for ex in Needle(kind="multivalue", split="train").examples(2, seed=0):
        paragraphs = [p for p in ex.context.split("\n") if not p.startswith("One of the special magic numbers")]
        assert len(paragraphs) > 3 and ex.context.count("One of the special magic numbers") == 4
        assert all(any(p in text for text in train.values()) for p in paragraphs)
        prose = [p for p in paragraphs if len(p) > 200]  # headings such as "History" are in every split
        assert prose and not any(p in text for p in prose for text in evaluation.values())


@pytest.mark.real
def test_cloze_qa_examples_are_checked():
    import re

    from gistify_bench.eval.registry import get_task

    task = get_task("qa-1k")
    for ex in task.examples(3, seed=2):
        (answer,) = ex.answers
        assert (
            "___" in ex.question and len(re.findall(rf"(?<![\w.,]){re.escape(answer)}(?![\w]|[.,]\d)", ex.context)) == 1
        )
        assert ex.question.replace("___", answer) in ex.context
        prefix = ex.question.split("___")[0].rstrip()
        assert len(prefix.split()) >= 3 and task.prompt(ex.context, ex.question).endswith("\n\n" + prefix)
        assert task.score(ex, f" {answer}, and later 7") == 1.0
        assert task.score(ex, f" 7 and then {answer}") == 0.0  # only the first number is the answer


@pytest.mark.real
def test_lm_task_scores_perplexity_of_the_continuation(tiny_model, tiny_tokenizer):
    from gistify_bench.eval.registry import get_task

    task = get_task("lm-1k")
    (ex,) = task.examples(1, seed=3)
    assert ex.meta["continuation"].strip() and ex.meta["continuation"] not in ex.context
    reader = Reader(tiny_model, tiny_tokenizer, "tiny")
    full = task.evaluate(reader, ex, ex.context)
    assert full["prediction"] is None and full["score"] > 1 and task.survival(ex, ex.context) is None
    assert full["score"] == pytest.approx(2.718281828 ** full["nll"], rel=1e-6)


@pytest.mark.real
def test_icl_examples_and_scoring():
    from gistify_bench.eval.registry import get_task

    task = get_task("icl-topics")
    (ex,) = task.examples(1, seed=4)
    labels = ex.meta["labels"]
    assert len(labels) == 4 and ex.answers[0] in labels and ex.question not in ex.context
    assert all(ex.context.count(f"Topic: {lab}\n") + ex.context.endswith(f"Topic: {lab}") == 8 for lab in labels)
    assert task.survival(ex, ex.context) == 1.0
    other = next(lab for lab in labels if lab != ex.answers[0])
    assert task.score(ex, f"{ex.answers[0]}\nSentence: {other}") == 1.0  # only the first line counts
    assert task.score(ex, f"{ex.answers[0]} or {other}") == 0.0


def test_peak_rss_measure():
    import mmap

    from gistify_bench.machine import reset_peak_rss, rss_mb

    assert reset_peak_rss()
    before = rss_mb()
    # touch 64 MB of a fresh anonymous mapping (a bytearray could reuse pages the process freed but still holds)
    block = mmap.mmap(-1, 64 * 1024 * 1024)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    assert rss_mb() - before > 50 and rss_mb("VmRSS") > 0
    block.close()


# -- the seams of the harness's layout: dataclass command lines, measurements, every family's report ----------------


def test_dataclass_configs_make_the_command_line():
    from dataclasses import dataclass

    from gistify_bench.options import check, from_args, option, parser_for

    @dataclass
    class Config:
        steps: int = option(3, "optimizer steps")
        lr: float = option(0.1, "learning rate")
        mode: str = option("a", "which mode", ("a", "b"))
        flag: bool = option(True, "a switch")
        out: str | None = option(None, "where results go")
        seeds: tuple = option((0,), "seeds")

        def __post_init__(self):
            check(self)

    p = parser_for(Config, "prog")
    args = ["--steps", "5", "--mode", "b", "--no-flag", "--out", "x", "--seeds", "1", "2"]
    assert from_args(Config, p.parse_args(args)) == Config(steps=5, mode="b", flag=False, out="x", seeds=(1, 2))
    assert from_args(Config, p.parse_args([])) == Config()
    assert "optimizer steps (default 3)" in p.format_help()
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "c"])
    with pytest.raises(ValueError, match="mode must be one of a, b"):
        Config(mode="c")


def test_trainer_configs_validate_and_reproduce_their_command():
    from gistify_bench.train import controller, oracle, vlm
    from gistify_bench.train.vist import loop as vist_train  # its VistTrainConfig is config.py's

    c = vist_train.parse(["--steps", "7", "--no-pve", "--local", "--copy", "0.5", "--inject", "prefix"])
    assert (c.steps, c.pve, c.local, c.copy, c.inject) == (7, False, True, 0.5, "prefix") and c.out is None
    assert c.command().startswith("python -m gistify_bench.train.vist ")
    assert vist_train.parse(c.command().split()[3:]) == c  # the card's command is the run
    assert c.pve_config().weight == 0.0 and c.model_config().local_latents
    with pytest.raises(ValueError, match="steps"):
        vist_train.VistTrainConfig(steps=0)
    with pytest.raises(ValueError, match="mask"):
        vist_train.VistTrainConfig(mask="most")
    settings = controller.ControllerConfig(ship=True, out="x").settings()
    assert "out" not in settings and "ship" not in settings and settings["samples"] == 4
    assert oracle.parse(["--steps", "3", "--no-progress"]).progress is False
    from gistify_bench.options import parser_for
    from gistify_bench.train import teacher

    for config in (oracle.OracleConfig, teacher.TeacherConfig):  # a "%" in a help text must not break --help
        assert "first 5% of the steps" in " ".join(parser_for(config, "x").format_help().split())
    with pytest.raises(ValueError, match="copy"):
        oracle.OracleConfig(copy=2.0)
    with pytest.raises(ValueError, match="batch"):
        vlm.VLMTrainConfig(batch=0)


def test_output_root_is_resolved_and_the_default_is_documented(tmp_path, monkeypatch, capsys):
    from gistify_bench.options import resolve_out

    monkeypatch.chdir(tmp_path)
    assert resolve_out(None, "vist") == tmp_path / "results" / "vist"
    assert resolve_out("rel") == tmp_path / "rel" and "output: " in capsys.readouterr().err


def test_measurements_write_one_document_under_their_family(tmp_path):
    from gistify_bench.eval.registry import get_task, tasks_of
    from gistify_bench.eval.report import vist as vist_report
    from gistify_bench.eval.runner import measure, run
    from gistify_bench.eval.task import Measurement, register

    class Echo(Measurement):
        family = "vist"
        result = "echo"

        def run(self, options):
            return {"options": options}

    if "echo-test" not in TASKS:
        register("echo-test", Echo())
    assert measure("echo-test", tmp_path, {"a": 1}) == {"options": {"a": 1}}
    assert json.loads((tmp_path / "vist/echo.json").read_text()) == {"options": {"a": 1}}
    with pytest.raises(ValueError, match="measurement"):
        run("echo-test", ["random"], [0.5], 1, tmp_path)
    assert isinstance(get_task("vist-lm"), Measurement) and "echo-test" in tasks_of("vist")
    assert {"easyvqa", "easyvqa-4", "vision-speed"} <= set(tasks_of("vision"))
    written = report.write(tmp_path)
    assert list(written) == ["vist"] and written["vist"][0].read_text().startswith("# vist against text")
    assert vist_report.report(tmp_path / "vist") == written["vist"][0].read_text()


def test_method_lists_come_from_the_registry():
    import gistify
    from gistify_bench.eval.cli import methods_for

    assert methods_for("vision", None) == list(gistify.methods("vision"))
    assert methods_for("text", None) == ["reinforce", "selfinfo", "random", "truncate"]
    assert methods_for("text", "all") == list(gistify.methods("text"))
    assert methods_for("text", "reinforce,llmlingua,kvpress-snapkv") == ["reinforce", "llmlingua", "kvpress-snapkv"]
    with pytest.raises(ValueError, match="unknown vision method"):
        methods_for("vision", "recover,llmlingua")
    assert methods_for("text", "truncate[side=tail],reinforce") == ["truncate[side=tail]", "reinforce"]
    with pytest.raises(ValueError, match="unknown text method"):
        methods_for("text", "nosuch[side=tail]")


def test_text_methods_take_parameters_in_brackets():
    from gistify_bench.eval.cli import with_params

    assert with_params("truncate[side=tail]") == ("truncate", {"side": "tail"})
    assert with_params("reinforce[recency=0;k=4]") == ("reinforce", {"recency": 0, "k": 4})
    assert with_params("reinforce") == ("reinforce", {})
    with pytest.raises(ValueError, match="NAME=VALUE"):
        with_params("reinforce[recency]")


def test_bench_lists_tasks_by_family(capsys):
    from gistify_bench.cli import main

    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["text", "vision", "vist"]
    assert "needle-single-1k" in lines[0] and "easyvqa-4" in lines[1] and "vist-cost" in lines[2]
