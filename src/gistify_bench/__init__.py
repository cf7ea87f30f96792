"""gistify_bench: the evaluation harness. It imports gistify; gistify never imports it."""
