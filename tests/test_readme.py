"""The README's first Python snippet runs as written, from the repository root, on the real embedded model."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.real
ROOT = Path(__file__).resolve().parents[1]


def test_the_first_python_snippet_runs(monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python") :]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 (our own README)
    r = scope["r"]
    assert r.method == "reinforce-fast" and r.tokens_out <= r.target_tokens + 1 and "0.9" in r.text
