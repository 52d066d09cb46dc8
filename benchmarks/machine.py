"""What machine a benchmark ran on: CPU model, the ISA flags XLA:CPU cares about, JAX devices.

`describe()` goes into every benchmark's JSON as `machine`; `format_machine()` is the
line the benchmarks print first. The CPU part reads /proc/cpuinfo (Linux) and falls back
to the `platform` module elsewhere (flags then empty).
"""

from __future__ import annotations

import os
import platform

# Instruction-set flags that decide which kernels XLA:CPU (and oneDNN for PyTorch) can use:
# x86 vector width, FMA, bf16/int8 dot products and AMX tiles; on Arm, NEON, SVE, bf16, i8mm.
ISA_FLAGS = (
    'sse4_2', 'avx', 'avx2', 'fma', 'f16c',
    'avx512f', 'avx512bw', 'avx512dq', 'avx512vl', 'avx512_vnni', 'avx512_bf16',
    'avx512_fp16', 'avx_vnni', 'amx_tile', 'amx_bf16', 'amx_int8', 'amx_fp16',
    'asimd', 'asimdhp', 'sve', 'sve2', 'bf16', 'i8mm', 'sme',
)


def host_cores() -> int:
  """Cores this process may run on (what XLA, tf.data and a Pool actually get)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def cpu_info(path: str = '/proc/cpuinfo') -> dict:
  """{'model': name, 'flags': [the ISA_FLAGS present, in ISA_FLAGS order]}."""
  model, flags = '', set()
  try:
    with open(path) as f:
      for line in f:
        key, _, value = line.partition(':')
        key = key.strip().lower()
        if key in ('model name', 'cpu model', 'hardware') and not model:
          model = value.strip()
        elif key in ('flags', 'features') and not flags:   # x86 'flags', Arm 'Features'
          flags = set(value.split())
  except OSError:
    pass
  return {'model': model or platform.processor() or platform.machine(),
          'flags': [f for f in ISA_FLAGS if f in flags]}


def describe() -> dict:
  """The machine as JSON: CPU, cores, OS, Python, JAX version, backend and devices."""
  import jax

  devices = jax.devices()
  cpu = cpu_info()
  return {
      'cpu_model': cpu['model'],
      'cpu_flags': cpu['flags'],
      'cpu_count': os.cpu_count(),
      'cores': host_cores(),
      'platform': platform.platform(),
      'python': platform.python_version(),
      'jax_version': jax.__version__,
      'backend': jax.default_backend(),
      'device_kind': devices[0].device_kind,
      'device_count': len(devices),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }


def format_machine(m: dict) -> str:
  return (f"machine: {m['cpu_model']} ({m['cores']} cores; "
          f"{' '.join(m['cpu_flags']) or 'no ISA flags read'}), "
          f"JAX {m['jax_version']} {m['backend']}: {m['device_count']} x {m['device_kind']}")
