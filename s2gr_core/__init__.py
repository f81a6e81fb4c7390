"""s2gr_core: the pure library of the S2GR pipeline.

No Prefect, MLflow or DVC imports here: every stage is a typed function that reads
its declared inputs and writes its declared outputs atomically (see ``stages``).

Importing the package sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the user set it) before torch
loads its OpenMP runtime: idle OpenMP threads then sleep instead of spinning. With spinning
threads, two 2-thread training processes on 2 cores each ran 5.3x slower than one alone
(6.4 s vs 1.2 s per step); with sleeping threads 1.4x, in proportion to the CPU lost.
Alone, the cost is within noise (bench/results: see the README's thread-policy section).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
