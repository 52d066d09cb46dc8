"""XLA:CPU's collectives on the simulated devices cannot deadlock a test process.

XLA:CPU's client runs two kinds of task on one thread pool of max(NPROC or the CPU cores,
devices) threads, and both can block there: each device's launch of the next program
waits for that device's earlier computations (`xla::Semaphore::ScopedAcquire` in
`CpuPjRtRawLoadedExecutable::Execute`), and each device's share of a running program waits
in every all-reduce until all its participants have arrived. With 8 simulated devices on
a 2-core machine the pool has 8 threads. Let Python dispatch steps ahead of the devices
and the next step's launches hold threads that the running step's last participants need:
they never start, the others wait in the all-reduce, and after 40 s XLA aborts the process
(`rendezvous.cc: Termination timeout for all reduce ... only 3 of 4 threads arrived`,
SIGABRT), the pytest process with every later test's result included. conftest.py sets
NPROC, which sizes that pool, to at least two threads per device.
"""

import os
import subprocess
import sys
import textwrap

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A small program that deadlocks: 300 steps of a data-parallel all-reduce on the 4x2 mesh,
# dispatched without waiting. On a 2-core Zen 1 (2026-12-03) it aborted in 10 runs of 10
# with the pool at 8, 9 or 12 threads (NPROC unset, 8, 9, 12) and passed in 9 of 9 at 15,
# 16 or 24 threads, in 2 s.
RUN_AHEAD = """
    import jax, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    mesh = jax.make_mesh((4, 2), ('data', 'model'),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    x = jax.device_put(np.ones((256, 128), np.float32), NamedSharding(mesh, P('data')))
    w = jax.device_put(np.eye(128, dtype=np.float32), NamedSharding(mesh, P()))
    step = jax.jit(lambda w, x: w - 1e-6 * (x @ w).T @ x)   # an all-reduce over 'data'
    for _ in range(300):
      w = step(w, x)
    print('DONE', float(w[0, 0]))
    """


def _xla_threads() -> int:
  """Threads of XLA:CPU's intra-op pool, which has the size of the launch pool."""
  return sum(open(f'/proc/self/task/{t}/comm').read().strip() == 'tf_XLAEigen'
             for t in os.listdir('/proc/self/task'))


@pytest.mark.skipif(not os.path.isdir('/proc/self/task'), reason='needs Linux /proc')
def test_the_xla_cpu_pool_has_two_threads_per_device():
  devices = jax.device_count()
  assert devices == 8
  assert int(os.environ['NPROC']) >= 2 * devices
  assert _xla_threads() >= 2 * devices


def test_dispatching_collective_steps_far_ahead_completes():
  """The pattern above in a fresh process with the tests' environment; a deadlock aborts
  it after 20 s rather than 40."""
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS=os.environ['XLA_FLAGS'] +
             ' --xla_cpu_collective_call_terminate_timeout_seconds=20')
  try:
    p = subprocess.run([sys.executable, '-c', textwrap.dedent(RUN_AHEAD)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  except subprocess.TimeoutExpired as e:
    pytest.fail(f'no result in {e.timeout} s:\n{(e.stderr or "")[-3000:]}')
  assert p.returncode == 0 and 'DONE' in p.stdout, (
      f'exit status {p.returncode} (-6: SIGABRT, an XLA collective deadlock?)\n'
      f'{p.stderr[-3000:]}')
