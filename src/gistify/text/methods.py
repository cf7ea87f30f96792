"""The text methods, one file each: importing this module registers them (the `gistify.methods` entry point
`text` names it). A new text method is one file in this folder and one name on the line below."""

from gistify.text import random, reinforce, selfinfo, truncate  # noqa: F401
