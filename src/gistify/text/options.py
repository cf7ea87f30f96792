"""The text pipeline's options, checked on their own (no model, no torch), so that the command line and
compress-batch refuse a bad option in a fraction of a second, before anything heavy loads."""

from __future__ import annotations

OVERFLOW = ("error", "keep", "trim")
FALLBACKS = ("auto", "off", "unchanged")  # or a keep fraction
STRUCTURES = ("auto", "off", "markdown", "json")


def check_options(structure: str = "auto", on_protected_overflow: str = "error", fallback=None, max_risk=None) -> None:
    """Raise ValueError naming the first option that is not valid."""
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {', '.join(map(repr, STRUCTURES))}, got {structure!r}")
    if on_protected_overflow not in OVERFLOW:
        raise ValueError(f"on_protected_overflow must be one of {', '.join(map(repr, OVERFLOW))}, got "
                         f"{on_protected_overflow!r}")  # fmt: skip
    if fallback is not None and fallback not in FALLBACKS:
        if isinstance(fallback, bool) or not isinstance(fallback, (int, float)) or not 0 < fallback <= 1:
            raise ValueError(
                f"fallback must be 'auto', 'off', 'unchanged' or a keep fraction in (0, 1], got {fallback!r}"
            )
    if max_risk is not None and (
        isinstance(max_risk, bool) or not isinstance(max_risk, (int, float)) or not 0 <= max_risk <= 1
    ):
        raise ValueError(f"max_risk must be a number in [0, 1], got {max_risk!r}")
