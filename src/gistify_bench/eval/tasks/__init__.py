"""Benchmark tasks of every family, one file each (text: needle, wiki, icl; vision: vqa, vision_speed; vist:
vist_lm, vist_icl, vist_cost, vist_bench, vist_runs). Importing this package registers them."""

from gistify_bench.eval.tasks import (  # noqa: F401
    icl,
    needle,
    vision_speed,
    vist_bench,
    vist_cost,
    vist_icl,
    vist_lm,
    vist_runs,
    vqa,
    wiki,
)
