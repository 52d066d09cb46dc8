"""Benchmarks: `python -m alexnet_jax.benchmark {input,step} [flags]`.

  input  host input pipelines on real photos, img/s per core (alexnet_jax.bench_input)
  step   the jitted training step (alexnet_jax.bench_step)

Each command's module has `main(argv)`, argv being the arguments after the command;
sys.argv is set to the same (program name first) for argparse/absl-style parsers.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

_COMMANDS = {
    'input': 'alexnet_jax.bench_input',
    'step': 'alexnet_jax.bench_step',
}


def main(argv: list[str]) -> int:
  if len(argv) < 1 or argv[0] not in _COMMANDS:
    print(__doc__.strip(), file=sys.stderr)
    return 2
  command, module_name = argv[0], _COMMANDS[argv[0]]
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name != module_name:
      raise
    print(f"benchmark {command!r}: {module_name} is not in this checkout yet; "
          f"available: {', '.join(c for c, m in _COMMANDS.items() if _exists(m))}",
          file=sys.stderr)
    return 1
  sys.argv = [f'{sys.argv[0]} {command}', *argv[1:]]
  module.main(argv[1:])
  return 0


def _exists(module_name: str) -> bool:
  return importlib.util.find_spec(module_name) is not None


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
