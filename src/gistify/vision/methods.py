"""The visual-token methods, one file each: importing this module registers them (the `gistify.methods` entry
point `vision` names it). A new vision method is one file in this folder and one name on the line below."""

from gistify.vision import fastv, pool, prumerge, random, recover, reinforce, tome, visionzip  # noqa: F401
