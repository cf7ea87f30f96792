"""gistify's own small VLM (EfficientNet-Lite0 -> projector -> SmolLM2), trained to measure visual-token reducers."""
