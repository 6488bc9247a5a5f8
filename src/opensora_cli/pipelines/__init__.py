"""Sampling: the scheduler registry and the conditioned (inpaint) video pipeline."""
