"""The grid tasks, one file each (text: needle, wiki, icl; vision: vqa). Importing a module registers its tasks;
gistify_bench.eval.registry imports them all (this package imports none, so that a task may import a sibling
without running the others). The measurements are gistify_bench.benches'."""
