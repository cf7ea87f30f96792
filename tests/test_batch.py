"""compress-batch: bad records reported in place, unusable input refused up front, resume after a kill, and the
same bytes on any engine and worker count: two local workers, and Ray (killed mid-job and resumed) give byte for
byte what one local worker gives. Real scorer (selfinfo: one forward pass a record), real Ray on a local instance
started here."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gistify
from conftest import INTEGRATIONS_TEST, assert_spans_rebuild, need
from gistify.batch import BatchInputError, compress_batch
from gistify.cli import main

pytestmark = pytest.mark.real

ALBEDO = Path(__file__).parents[1] / "examples" / "albedo.txt"
JOB = dict(keep=0.5, method="selfinfo")


@pytest.fixture(scope="module")
def scorer():
    return gistify.Scorer.load()  # not cached: an error that names `gistify models fetch` (scripts/setup.sh)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Eight real paragraphs (their first sentences: short, for speed), some with a question or their own
    budget, one with an extra field."""
    paragraphs = [p for p in ALBEDO.read_text(encoding="utf-8").splitlines() if len(p) > 200][:8]
    rows = [{"id": f"albedo-{i}", "text": p[: p.find(" ", 300)]} for i, p in enumerate(paragraphs)]
    rows[1]["question"] = "What is the albedo of fresh snow?"
    rows[2]["tokens"] = 20
    rows[3]["source"] = {"file": "albedo.txt", "paragraph": 3}
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "in.jsonl", rows)


@pytest.fixture(scope="module")
def reference(corpus, scorer, tmp_path_factory):
    """The corpus compressed in one uninterrupted run of the local engine."""
    out = tmp_path_factory.mktemp("reference") / "out.jsonl"
    summary = compress_batch(corpus, out, scorer=scorer, **JOB)
    assert (summary.compressed, summary.errors) == (8, 0)
    return out.read_bytes()


def lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def test_output_keeps_what_was_given(corpus, reference):
    given = lines(corpus.read_bytes())
    out = lines(reference)
    assert [o["id"] for o in out] == [g["id"] for g in given]
    for g, o in zip(given, out):
        assert_spans_rebuild(g["text"], o["kept_spans"], o["text"])
        budget = gistify.Budget(tokens=g["tokens"]) if "tokens" in g else gistify.Budget(keep=JOB["keep"])
        assert abs(o["tokens_out"] - budget.target(o["tokens_in"])) <= 1, o  # the budget, within a token
        assert "seconds" not in o
        assert {k: g[k] for k in g if k != "text"} == {k: o[k] for k in g if k != "text"}  # passed through
    assert out[2]["budget"] == "tokens=20" and out[0]["budget"] == "keep=0.5"


def test_bad_records_are_reported_in_place(tmp_path, scorer):
    good = ALBEDO.read_text(encoding="utf-8").splitlines()[0]
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": 1, "text": good},
            {"id": 2, "text": ""},
            {"id": 3, "text": 42},
            {"id": 4, "text": "word " * 200},
            "",  # a blank line is not a record
            {"id": 5},
            {"id": 6, "text": good, "keep": 2},
            {"id": 7, "text": good, "keep": 0.5, "tokens": 3},
            {"id": 8, "text": good, "tokens_out": 3},
            {"id": 9, "text": good, "question": ["not", "text"]},
            {"id": "last", "text": good, "tokens": 10},
        ],
    )
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    summary = compress_batch(src, tmp_path / "out.jsonl", scorer=scorer, max_chars=900, **JOB)
    out = lines((tmp_path / "out.jsonl").read_bytes())
    assert [o["id"] for o in out] == [1, 2, 3, 4, 5, 6, 7, 8, 9, "last"]
    errors = {o["id"]: o.get("error") for o in out}
    assert errors[1] is None and errors["last"] is None and out[-1]["tokens_out"] <= 10
    assert errors[2] == "text is empty (or only whitespace)"
    assert errors[3] == "text is not a string (got int)"
    assert errors[4].startswith("text is over the size limit (1000 characters > 900")
    assert errors[5] == "no text"
    assert "keep" in errors[6] and "(0, 1]" in errors[6]
    assert errors[7] == "give the record either keep or tokens, not both"
    assert "reserved" in errors[8] and "question is not a string" in errors[9]
    assert (summary.compressed, summary.errors) == (2, 8) and "8 errors" in str(summary)
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before  # the input is never changed


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"id": 1, "text": "a"}, "{not json"], "line 2 is not JSON"),
        ([{"id": 1, "text": "a"}, {"text": "b"}], "line 2 has no id"),
        ([{"id": 1.5, "text": "a"}], "line 1 has the id 1.5"),
        ([{"id": "a", "text": "a"}, {"id": "a", "text": "b"}], 'line 2 repeats the id "a" of line 1'),
        (["[1, 2]"], "line 1 is a JSON list"),
    ],
)
def test_unusable_input_stops_before_any_work(tmp_path, capsys, rows, message):
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    with pytest.raises(BatchInputError, match=message):
        compress_batch(src, tmp_path / "out.jsonl", **JOB)
    assert main(["compress-batch", str(src), str(tmp_path / "out.jsonl"), "--keep", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and not (tmp_path / "out.jsonl").exists()


def test_resume_after_kill_leaves_one_line_per_id(corpus, reference, scorer, tmp_path):
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "gistify.cli", "compress-batch", str(corpus), str(out), "--keep", "0.5"]
    job = subprocess.Popen([*cmd, "-m", "selfinfo"], stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 2):
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)  # no chance to clean up, as in a crash
    job.wait()
    written = out.read_bytes().count(b"\n")
    assert 2 <= written < 8, "the job finished before it could be killed"
    with open(out, "ab") as f:  # and a line cut short mid-write
        f.write(b'{"id": "albedo-7", "text": "cut sh')

    summary = compress_batch(corpus, out, scorer=scorer, **JOB)
    assert summary.skipped == written and summary.done == 8 - written
    assert out.read_bytes() == reference  # each id once, in input order, nothing lost or doubled
    again = compress_batch(corpus, out, scorer=scorer, **JOB)
    assert again.done == 0 and out.read_bytes() == reference


def test_output_of_another_input_is_refused(corpus, tmp_path, scorer):
    out = write_jsonl(tmp_path / "out.jsonl", [{"id": "elsewhere", "text": "x"}])
    with pytest.raises(BatchInputError, match='holds the id "elsewhere", which is not in the input'):
        compress_batch(corpus, out, scorer=scorer, **JOB)


def test_parquet_in_and_out(corpus, reference, scorer, tmp_path):
    pa = need("pyarrow", install=INTEGRATIONS_TEST)
    pq = need("pyarrow.parquet", install=INTEGRATIONS_TEST)
    rows = lines(corpus.read_bytes())
    src = tmp_path / "in.parquet"
    rows = rows[:4]
    pq.write_table(pa.Table.from_pylist([{"id": r["id"], "text": r["text"]} for r in rows]), src, row_group_size=3)
    out = tmp_path / "out.parquet"
    summary = compress_batch(src, out, scorer=scorer, **JOB)
    assert summary.done == 4 and out.exists() and not (tmp_path / "out.parquet.part.jsonl").exists()
    got = pq.read_table(out).to_pylist()
    want = lines(reference)[:4]
    assert [g["id"] for g in got] == [w["id"] for w in want]
    assert got[0]["kept_spans"] == want[0]["kept_spans"] and got[0]["text"] == want[0]["text"]


@pytest.fixture(scope="module")
def local_ray():
    ray = need("ray", install=INTEGRATIONS_TEST)
    need("ray.data", install=INTEGRATIONS_TEST)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


def test_two_local_workers_give_one_workers_bytes(corpus, reference, tmp_path):
    out = tmp_path / "out.jsonl"
    summary = compress_batch(corpus, out, workers=2, **JOB)
    assert (summary.engine, summary.workers, summary.done) == ("local", 2, 8)
    assert out.read_bytes() == reference


def test_ray_engine_gives_the_local_engines_bytes(corpus, reference, local_ray, tmp_path):
    out = tmp_path / "out.jsonl"
    summary = compress_batch(corpus, out, engine="ray", workers=2, **JOB)
    assert summary.engine == "ray" and summary.done == 8
    assert out.read_bytes() == reference
    assert local_ray.is_initialized()  # the job used the instance it found and left it running


def test_ray_job_killed_and_resumed_gives_the_local_engines_bytes(corpus, reference, local_ray, tmp_path):
    """A Ray job's driver killed mid-job (a process of its own on this test's Ray instance, so that nothing of
    Ray outlives the test), then the job resumed on Ray: one line per id, the bytes of one local worker."""
    out = tmp_path / "out.jsonl"
    out.touch()
    address = local_ray.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "gistify.cli", "compress-batch", str(corpus), str(out), "--keep", "0.5",
           "-m", "selfinfo", "--engine", "ray", "--workers", "2", "--ray-address", address, "--quiet"]  # fmt: skip
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as stderr:  # a file, not a pipe: Ray's warnings cannot fill it and stall the job
        job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    deadline = time.monotonic() + 300
    while job.poll() is None and time.monotonic() < deadline and not out.read_bytes().count(b"\n"):
        time.sleep(0.02)
    assert job.poll() is None, f"the Ray job ended before it could be killed: {err.read_text()[-2000:]}"
    os.killpg(job.pid, signal.SIGKILL)  # the driver, as in a crash; Ray ends the actors of a dead driver
    job.wait()
    written = out.read_bytes().count(b"\n")
    assert 1 <= written < 8, "the job finished before it could be killed"

    summary = compress_batch(corpus, out, engine="ray", workers=2, **JOB)
    assert summary.engine == "ray" and summary.skipped == written and summary.done == 8 - written
    assert out.read_bytes() == reference


def test_cli_job_without_the_scorer(corpus, tmp_path, capsys):
    """truncate counted in cl100k_base needs no LM: the job loads none, and says what it did at the end."""
    out = tmp_path / "out.jsonl"
    args = ["compress-batch", str(corpus), str(out), "--tokens", "30", "-m", "truncate", "--tokenizer", "cl100k_base"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "8 records: 8 compressed, 0 errors, 0 already done" in err and "local engine, 1 worker)" in err
    rows = lines(out.read_bytes())
    assert all(r["tokens_out"] <= 30 and r["kept_spans"][0][0] == 0 for r in rows)
    assert main(args) == 0 and "8 already done" in capsys.readouterr().err
