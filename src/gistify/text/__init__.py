"""The text family: compress a text for a question by keeping its most valuable words.

words.py     words as units: segmentation, token costs, selection under a budget, reassembly, the Document
base.py      TextMethod: a method only scores words; `compress` runs the pipeline around the score
pipeline.py  the compress pipeline (budget, protection, scoring, selection, fitting to the real token count)
protect.py   spans always kept verbatim (regexes, numbers, negations, identifiers)
tokens.py    target tokenizers that budgets are counted in (the scorer's, OpenAI's cl100k_base / o200k_base)
scorer.py    the scorer LM: per-token self-information and hidden states, in windows of bounded memory
methods.py   the registry line of each method (one file each: reinforce, selfinfo, random, truncate)
"""

# What every entry point compresses with unless told otherwise: reinforce on the scorer's fast path (docs/methods.md
# §1.2.2; the full pass where the scorer has no trained surprisal head).
DEFAULT_METHOD = "reinforce-fast"
