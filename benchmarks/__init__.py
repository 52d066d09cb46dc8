"""Benchmarks of alexnet_jax (not part of the installed package; run from the repo root).

  python -m benchmarks.step   the jitted training step vs PyTorch (benchmarks/step_lib.py)
  python -m benchmarks.input  host input pipelines on real photos (benchmarks/input_lib.py)

Each CLI module defines its flags and a thin main; the *_lib modules hold the code and are
what the tests import.
"""
