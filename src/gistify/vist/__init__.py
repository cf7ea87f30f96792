"""vist (arXiv 2502.00791): distant context rendered to images, read by a frozen OCR encoder, resampled into a
few tokens that the LLM attends to (cross-attention in each decoder layer, or a prefix). docs/methods.md §3.

encoder.py   PP-OCRv6's recogniser (onnxruntime), frozen, with a content-keyed feature cache
resampler.py the Perceiver resampler: an image's features -> N latent tokens (+ a CLS for PVE)
inject.py    CEPE-style cross-attention in every decoder layer (scoped hooks), or the tokens as a prefix
"""
