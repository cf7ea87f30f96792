"""Every registered text method with the parameter sets the contract tests run it under."""

TEXT_METHODS = {
    "random": [{"seed": 0}, {"seed": 7}],
    "truncate": [{"side": "head"}, {"side": "tail"}, {"side": "middle"}],
    "selfinfo": [{}, {"aggregate": "mean"}],
    "reinforce": [
        {},
        {"query": "max"},
        {"query": "mean", "aggregate": "mean", "k": 4, "layer": 0, "sigma": 32.0, "tail_tokens": 32},
        {"recency": 0.0},  # no question: the previous uniform prior
        {"tail_share": 0.5, "alpha": 0.85},  # no question: half the budget on the text's end, verbatim
    ],
    "reinforce-fast": [{}, {"query": "max", "tail_tokens": 16}, {"value_clause": 2.0, "precision": "bfloat16"}],
    "reinforce-shallow": [{}],
    "reinforce-rl": [{"weights": (1.0, -0.5, 2.0), "bias": 0.3}],  # the shipped weights: tests/test_controller.py
}
