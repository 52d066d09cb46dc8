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


# x86 (vendor, family) -> [(first model, last model, core generation)]: what a virtual
# machine's bare "AMD EPYC" or "Intel Xeon Processor" name does not say. Public CPUID
# family/model numbers; anything not listed is left unnamed.
_GENERATIONS = {
    ('AuthenticAMD', 23): [(0x00, 0x2f, 'Zen/Zen+'), (0x30, 0xff, 'Zen 2')],
    ('AuthenticAMD', 25): [(0x00, 0x0f, 'Zen 3'), (0x10, 0x1f, 'Zen 4'), (0x20, 0x5f, 'Zen 3'),
                           (0x60, 0x7f, 'Zen 4'), (0xa0, 0xaf, 'Zen 4')],
    ('AuthenticAMD', 26): [(0x00, 0xff, 'Zen 5')],
    ('GenuineIntel', 6): [(0x55, 0x55, 'Skylake/Cascade Lake server'),
                          (0x6a, 0x6c, 'Ice Lake server'), (0x8f, 0x8f, 'Sapphire Rapids'),
                          (0xad, 0xae, 'Granite Rapids'), (0xcf, 0xcf, 'Emerald Rapids')],
}


def cpu_generation(vendor: str, family: int | None, model: int | None) -> str:
  """'Zen 3', 'Sapphire Rapids', ... from CPUID vendor/family/model; '' when unknown."""
  if family is None or model is None:
    return ''
  for lo, hi, name in _GENERATIONS.get((vendor, family), ()):
    if lo <= model <= hi:
      return name
  return ''


def cpu_info(path: str = '/proc/cpuinfo') -> dict:
  """{'model': name, 'flags': [the ISA_FLAGS present, in ISA_FLAGS order], 'vendor',
  'family', 'model_number' (x86 CPUID; '' / None elsewhere), 'generation' (e.g. 'Zen 3',
  from cpu_generation; '' when unknown)}."""
  model, flags, vendor, family, number = '', set(), '', None, None
  try:
    with open(path) as f:
      for line in f:
        key, _, value = line.partition(':')
        key = key.strip().lower()
        if key in ('model name', 'cpu model', 'hardware') and not model:
          model = value.strip()
        elif key in ('flags', 'features') and not flags:   # x86 'flags', Arm 'Features'
          flags = set(value.split())
        elif key == 'vendor_id' and not vendor:
          vendor = value.strip()
        elif key == 'cpu family' and family is None and value.strip().isdigit():
          family = int(value)
        elif key == 'model' and number is None and value.strip().isdigit():
          number = int(value)
  except OSError:
    pass
  return {'model': model or platform.processor() or platform.machine(),
          'flags': [f for f in ISA_FLAGS if f in flags],
          'vendor': vendor, 'family': family, 'model_number': number,
          'generation': cpu_generation(vendor, family, number)}


def describe() -> dict:
  """The machine as JSON: CPU, cores, OS, Python, JAX version, backend and devices."""
  import jax

  devices = jax.devices()
  cpu = cpu_info()
  return {
      'cpu_model': cpu['model'],
      'cpu_generation': cpu['generation'],
      'cpu_family': cpu['family'],
      'cpu_model_number': cpu['model_number'],
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
  generation = f" ({m['cpu_generation']})" if m.get('cpu_generation') else ''
  return (f"machine: {m['cpu_model']}{generation} ({m['cores']} cores; "
          f"{' '.join(m['cpu_flags']) or 'no ISA flags read'}), "
          f"JAX {m['jax_version']} {m['backend']}: {m['device_count']} x {m['device_kind']}")
