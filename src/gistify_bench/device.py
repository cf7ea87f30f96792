"""`--device` for the trainers: where the training steps and evaluations run.

The CPU is the default and what the tests and the README use. On an accelerator (`cuda`, `cuda:1`), the frozen
LLM, the trained modules and every batch move there, and `torch.set_default_device` makes the tensors a step
builds (masks, positions, padding) land there too. What stays on the CPU: the PP-OCRv6 encoder (onnxruntime;
its features are cached on disk and moved per batch), the tokenizer, the cached targets until they are stacked,
and the checkpoints (saved from the CPU so a run stopped on one machine resumes on another).
"""

from __future__ import annotations

import dataclasses

import torch


def check_device(name: str) -> None:
    """A one-line error for a device torch cannot parse or this machine does not have (before anything loads)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this torch ({torch.__version__}) sees no CUDA device; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: only cpu and cuda are supported")


def use_device(name: str) -> torch.device:
    """Make `name` the device of the steps: torch's default device for new tensors. Returns it. On the CPU
    nothing is set (the default device is a mode that intercepts every torch call: a cost the CPU need not pay)."""
    device = torch.device(name)
    if device.type != "cpu":
        torch.set_default_device(device)
    return device


def to_device(x, device: torch.device):
    """A batch (dicts, lists, tuples, dataclasses such as Pages) with every tensor in it on `device`."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.replace(x, **{f.name: to_device(getattr(x, f.name), device) for f in dataclasses.fields(x)})
    return x


def on_cpu(state: dict) -> dict:
    """A state dict on the CPU (what checkpoints and safetensors files hold)."""
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
