"""Text compressors, one file each. Importing this package registers them."""

from gistify.text import random, reinforce, selfinfo, truncate  # noqa: F401
