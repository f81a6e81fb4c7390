"""Prefect flows: orchestrate DVC stages (see flows/pipeline.py)."""
