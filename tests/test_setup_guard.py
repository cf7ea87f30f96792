"""A part of the test set-up that is missing (here Ray, hidden by an import hook) fails the test under CI=true and
skips it elsewhere, both with the command that installs it (conftest.need). Run as pytest on a small test file in
a fresh process, so that the hook hides Ray from that process only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HIDE_RAY = """
import sys


class HideRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r} (hidden by the test's import hook)")


sys.meta_path.insert(0, HideRay())
"""
USES_RAY = """
from conftest import INTEGRATIONS_TEST, need


def test_uses_ray():
    need("ray", install=INTEGRATIONS_TEST)
"""


@pytest.mark.parametrize("ci, outcome", [("true", "1 failed"), ("", "1 skipped")], ids=["ci", "local"])
def test_a_missing_extra_fails_under_ci_and_skips_elsewhere(tmp_path, ci, outcome):
    (tmp_path / "sitecustomize.py").write_text(HIDE_RAY)  # imported at start-up from PYTHONPATH
    (tmp_path / "test_uses_ray.py").write_text(USES_RAY)
    path = [str(tmp_path), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, CI=ci, PYTHONPATH=os.pathsep.join(p for p in path if p), COLUMNS="1000")  # no cut lines
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)]
    r = subprocess.run([*cmd, "test_uses_ray.py"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert outcome in r.stdout, r.stdout + r.stderr
    message = "ray (No module named 'ray' (hidden by the test's import hook)) is missing; install it with: "
    assert message + ".venv/bin/python -m pip install -e '.[integrations-test]'" in r.stdout, r.stdout
    assert r.returncode == (1 if ci else 0)
