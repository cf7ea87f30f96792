"""Visual-token reducers, one file each. Importing this package registers them.

A method reads one image's tokens and what an adapter collected (`VisualContext`) and returns a `Reduction`;
it never touches a model. `gistify.get_method("recover")`, `gistify.get_method("random", kind="vision")`.
"""

from gistify.vision import fastv, pool, prumerge, random, recover, reinforce, tome, visionzip  # noqa: F401
from gistify.vision.base import Reduction, VisionMethod, VisualContext

__all__ = ["Reduction", "VisionMethod", "VisualContext"]
