"""s2gr_core: the pure library of the S2GR pipeline.

No Prefect, MLflow or DVC imports here: every stage is a typed function that reads
its declared inputs and writes its declared outputs atomically (see ``stages``).

Importing the package bounds OpenMP's spin-waiting before torch loads its OpenMP runtime
(GNU libgomp, which reads its environment once, at load): ``GOMP_SPINCOUNT=3000``, unless the
user set ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY``. An idle OpenMP thread then spins a few
microseconds before it sleeps, instead of up to 300,000 spins by default. ``bench/contention.py``
on the ``make run`` TIGER step (ms/step, 2 cores): OpenMP's default 105 alone, 352-463 next to
a busy process, 654-1,660 for each of two trainings; ``GOMP_SPINCOUNT=3000`` 110 alone, 217 next
to a busy process, 223 each for two trainings (in proportion to the CPU lost);
``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) resists contention as well but costs 37% alone on
small models (144: no faster than one thread). See docs/models.md, 'Threads under CPU contention'.

It also tells glibc's malloc to keep freed memory for reuse (``allocator``): a fresh large tensor
is otherwise page-faulted as it is written, which cost S2GR training about 40% of its CPU time.
"""

import os
import sys
import warnings

SPIN_COUNT = "3000"

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    if "torch" not in sys.modules:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    else:  # too late to take effect: leave the environment telling the truth (runs log it)
        warnings.warn(
            "torch was imported before s2gr_core, so its OpenMP runtime keeps the default spin-waiting "
            f"(GOMP_SPINCOUNT={SPIN_COUNT} takes effect only before torch loads): under CPU contention "
            "training may slow down several-fold; import s2gr_core first or set GOMP_SPINCOUNT yourself",
            stacklevel=2,
        )

from s2gr_core.allocator import keep_freed_memory  # noqa: E402 (after the OpenMP environment)

keep_freed_memory()

__version__ = "0.1.0"
