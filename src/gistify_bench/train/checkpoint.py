"""Long runs that stop and resume: one checkpoint file per run, a clock that says when to stop.

The teacher and the distillation (gistify_bench.train.teacher, .distill) take `--resume`, `--stop-after MINUTES`
and `--stop-at-step N`. Their batches are functions of (seed, step) and no step draws from a global random
generator, so the data position is the step itself; a checkpoint holds the trained weights, the optimizer's
state, the step (and phase), and what the run has measured so far. A run stopped and resumed is the run that
was never stopped, bit for bit (tests/test_vist_train.py checks 2 x N steps against 2N).

A checkpoint records the settings the run depends on; resuming one made with other settings is an error, so a
run never continues someone else's. The optimizer state is large (twice the weights) and is never committed: a
committed run resumes from its weights (`--init`), and the optimizer's moments rebuild within the warm-up.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from gistify_bench.options import RUN_ONLY


def settings(config: Any) -> dict:
    """The fields of a config dataclass that a resumed run must share with the one it continues."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in RUN_ONLY}


class Checkpoint:
    """One run's checkpoint at `path`; `due()` says when to save and stop.

    stop_after: minutes of this process's run before it saves and stops (0: never); stop_at_step: the global
    step after which it saves and stops (0: never); save_every: also save every this many steps (0: only at the
    end and when stopping)."""

    def __init__(self, path: Path, config: Any, stop_after: float = 0.0, stop_at_step: int = 0, save_every: int = 0):
        self.path, self.settings = Path(path), settings(config)
        # a setting added to the trainer after a checkpoint was saved: the checkpoint ran with its default
        self.defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
        self.stop_after, self.stop_at_step, self.save_every = stop_after, stop_at_step, save_every
        self.started = time.monotonic()

    @classmethod
    def of(cls, config: Any, *default_out: str) -> Checkpoint:
        """The checkpoint of a trainer's config (fields out, stop_after, stop_at_step, save_every): OUT/checkpoint.pt,
        OUT defaulting to ./results/<default_out>."""
        from gistify_bench.options import resolve_out

        out = resolve_out(config.out, *default_out, announce=False)
        return cls(out / "checkpoint.pt", config, config.stop_after, config.stop_at_step, config.save_every)

    def load(self) -> dict | None:
        """The saved state, or None when there is none; raises when it was made with other settings."""
        if not self.path.is_file():
            return None
        state = torch.load(self.path, weights_only=False, map_location="cpu")  # a run may resume on another device
        saved = state["settings"]
        changed = sorted(k for k in self.settings if saved.get(k, self.defaults.get(k)) != self.settings[k])
        changed += sorted(set(saved) - set(self.settings))
        if changed:
            raise ValueError(
                f"{self.path} was made with another configuration (differs in {', '.join(changed)}); "
                "rerun with its settings, or without --resume to start over"
            )
        return state

    def save(self, state: dict) -> None:
        """Write atomically: a run killed while saving keeps its previous checkpoint."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({"settings": self.settings, **state}, tmp)
        tmp.replace(self.path)

    def stop(self, step: int) -> bool:
        """After global step `step` (1-based): stop now (time or step limit)?"""
        if self.stop_at_step and step >= self.stop_at_step:
            return True
        return bool(self.stop_after) and time.monotonic() - self.started >= 60 * self.stop_after

    def periodic(self, step: int) -> bool:
        return bool(self.save_every) and step % self.save_every == 0


def rng_state() -> dict:
    """torch's global generator (an LLM with dropout, a sampler that draws from it): restored on resume."""
    return {"torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
