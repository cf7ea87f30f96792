"""The visual-token family: reducers that prune or merge an image's tokens inside a vision-language model.

A method reads one image's tokens and what an adapter collected (`VisualContext`) and returns a `Reduction`;
it never touches a model. `gistify.get_method("recover")`, `gistify.get_method("random", kind="vision")`.

base.py      VisualContext, Reduction, VisionMethod (budgets, identity, the contract checks)
ops.py       tensor operations the reducers share (LOF / IQR outlier ratios, merging, complements)
methods.py   the registry line of each method (one file each: recover, reinforce, random, pool, fastv, ...)
session.py   gistify.reduce and its Session: the method inside a model for a `with` block, hooks undone after
adapters/    the only code that knows where a model keeps its visual tokens, one file per model family
"""

from gistify.vision.base import Reduction, VisionMethod, VisualContext

__all__ = ["Reduction", "VisionMethod", "VisualContext"]
