"""Thin Prefect tasks (see tasks/dvc.py)."""
