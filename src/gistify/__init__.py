"""gistify: cut the tokens a language model must read, and keep the answers right.

    import gistify
    r = gistify.compress(context, question="...", keep=0.3)  # method="reinforce-fast" by default
    r.text, r.tokens_in, r.tokens_out, r.kept_spans

Nothing heavy happens at import: names are loaded on first use, models when first needed.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Budget": "gistify.budget",
    "Compressed": "gistify.result",
    "Method": "gistify.method",
    "Scorer": "gistify.text.scorer",
    "compress": "gistify.api",
    "get_method": "gistify.method",
    "methods": "gistify.method",
    "reduce": "gistify.vision.session",
    "render": "gistify.rendering",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gistify' has no attribute {name!r}")
