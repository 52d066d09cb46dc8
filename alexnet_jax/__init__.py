"""alexnet_jax: AlexNet (Krizhevsky, Sutskever & Hinton, 2012) in JAX/Flax.

Importing the package first makes XLA:CPU's simulated devices safe to use. With
`XLA_FLAGS=--xla_force_host_platform_device_count=N` (how the mesh and the two-tower split
are tried on a CPU), XLA:CPU runs each device's launch of a program and each device's share
of a running one on one thread pool of max(NPROC or the cores, N) threads, and both can
wait there. When Python dispatches steps ahead, the next step's waiting launches can hold
every thread that the current step's last all-reduce participants need, and XLA aborts the
process after 40 s ("Termination timeout for all reduce ... only 3 of 4 threads arrived").
Two threads per simulated device leave room for both (tests/test_collectives.py); NPROC
must be set before JAX starts, so it is set here, by every command's first import.
"""

import os as _os
import re as _re


def _threads_for_simulated_devices() -> None:
  forced = _re.search(r'--xla_force_host_platform_device_count=(\d+)',
                      _os.environ.get('XLA_FLAGS', ''))
  if not forced:
    return
  cores = (len(_os.sched_getaffinity(0)) if hasattr(_os, 'sched_getaffinity')
           else _os.cpu_count() or 1)
  have = int(_os.environ.get('NPROC') or 0) or cores
  _os.environ['NPROC'] = str(max(have, 2 * int(forced.group(1))))


_threads_for_simulated_devices()
