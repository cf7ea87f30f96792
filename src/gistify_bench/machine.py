"""Peak memory of a process (this one by default), from Linux's /proc (None elsewhere)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def reset_peak_rss(pid: int | str = "self") -> bool:
    """Restart the VmHWM high-water mark at the current RSS; False where /proc cannot do it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb(field: str = "VmHWM", pid: int | str = "self") -> float | None:
    """VmHWM (peak since the last reset) or VmRSS (now), in MB."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(ln.split()[1]) / 1024 for ln in lines if ln.startswith(field + ":")), None)


def machine() -> str:
    """The CPU model, core count and system: what timings are for."""
    cpu = platform.processor() or "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            cpu,
        )
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"
