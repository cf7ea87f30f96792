"""gistify_bench: the evaluation harness and the trainers. It imports gistify; gistify never imports it.

- eval/: the grid tasks of every family (tasks/: text and vision) on one Task / registry / runner / report path,
  under one results root; `gistify bench` (eval.cli; cli.main is the registered entry point).
- benches/: the measurements (vision speed, vist's comparisons, registered with the tasks) and the stand-alone
  benches (speed, negations, batch, serve, flops), apart from the grid tasks.
- train/: the trainers (controller, vlm, vist/, oracle, teacher, ...), each with a dataclass config, writing under
  --out; they import no eval module.
- shared: data (the Wikipedia articles), cloze (questions over them), stats (bootstrap intervals), machine (the
  CPU and peak memory a timing is for), options (dataclass command lines, the default ./results root), vlm/ (the
  small VLM, its adapter, weights and easy-vqa data), vist/ (vist's windows and held-out scoring).
"""
