"""Peers run for real, each in its own environment where its pins conflict with ours."""
