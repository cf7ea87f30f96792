"""Long runs that stop and resume (gistify_bench.train.checkpoint): a checkpoint resumes only under the settings it
was made with, and a setting the trainer gained later counts as its default."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gistify_bench.train.checkpoint import Checkpoint


@dataclass
class Before:
    lr: float = 1e-3
    out: str | None = None  # run-only: never compared


@dataclass
class After(Before):
    relevance: bool = False  # added after checkpoints were made


@dataclass
class Renamed:
    learning_rate: float = 1e-3  # lr renamed: the saved lr has nowhere to go


def test_a_checkpoint_resumes_under_its_settings_and_later_defaults(tmp_path):
    path = tmp_path / "checkpoint.pt"
    Checkpoint(path, Before()).save({"step": 7})
    assert Checkpoint(path, Before(out="elsewhere")).load()["step"] == 7
    assert Checkpoint(path, After()).load()["step"] == 7  # the old run had the new setting's default
    refused = ((After(relevance=True), "relevance"), (Before(lr=1e-2), "lr"), (Renamed(), "lr"))
    for changed, what in refused:
        with pytest.raises(ValueError, match=f"differs in {what}"):
            Checkpoint(path, changed).load()
    assert Checkpoint(tmp_path / "none.pt", Before()).load() is None
