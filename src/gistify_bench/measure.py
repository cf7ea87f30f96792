"""Peak memory of this process, from Linux's /proc (None elsewhere)."""

from __future__ import annotations

from pathlib import Path


def reset_peak_rss() -> bool:
    """Restart the VmHWM high-water mark at the current RSS; False where /proc cannot do it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb(field: str = "VmHWM") -> float | None:
    """VmHWM (peak since the last reset) or VmRSS (now), in MB."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(ln.split()[1]) / 1024 for ln in lines if ln.startswith(field + ":")), None)
