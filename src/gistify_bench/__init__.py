"""gistify_bench: the evaluation harness and the trainers. It imports gistify; gistify never imports it.

- eval/: every family's tasks (text, vision, vist) on one Task / runner / report path, under one results root;
  `gistify bench` (eval.cli; cli.main is the registered entry point).
- train/: the trainers (controller, vlm, vist/, oracle, teacher), each with a dataclass config, writing under --out.
- shared by both: data (the Wikipedia articles), options (dataclass command lines, the default ./results root),
  vlm/ (the small VLM, its adapter, weights and easy-vqa data), vist/ (vist's windows and held-out scoring).
"""
