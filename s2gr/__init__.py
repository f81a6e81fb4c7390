"""s2gr application layer: the CLI and MLflow tracking around the pure ``s2gr_core`` library."""

__version__ = "0.1.0"
