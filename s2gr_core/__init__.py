"""s2gr_core: the pure library of the S2GR pipeline.

No Prefect, MLflow or DVC imports here: every stage is a typed function that reads
its declared inputs and writes its declared outputs atomically (see ``stages``).
"""

__version__ = "0.1.0"
