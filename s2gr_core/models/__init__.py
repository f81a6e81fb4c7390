"""Sequence models. One package per model (config lives in s2gr_core.config; data/model/train here)."""
