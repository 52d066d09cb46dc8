"""Measure fp32 matmul peak (FLOP/s) with jnp.dot and torch.mm on this CPU.

Usage: python experiments/cpu_study/matmul_peak.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import jax
import jax.numpy as jnp
import numpy as np
import torch
from common import bench, jax_block

torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))


def main():
    print("jax", jax.__version__, "torch", torch.__version__, "torch threads", torch.get_num_threads())
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}")
    best = {}
    for n in (1024, 2048, 3072, 4096):
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
        flops = 2 * n ** 3
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        f = jax.jit(jnp.dot)
        tj, _ = bench(lambda: f(ja, jb), sync=jax_block, iters=7)
        ta_, tb_ = torch.from_numpy(a), torch.from_numpy(b)
        with torch.no_grad():
            tt, _ = bench(lambda: torch.mm(ta_, tb_), iters=7)
        gj, gt = flops / tj / 1e9, flops / tt / 1e9
        best["jax"] = max(best.get("jax", 0), gj)
        best["torch"] = max(best.get("torch", 0), gt)
        print(f"n={n:5d}  jnp.dot {tj*1e3:8.2f} ms {gj:7.1f} GFLOP/s | torch.mm {tt*1e3:8.2f} ms {gt:7.1f} GFLOP/s")
    print(f"PEAK jnp.dot {best['jax']:.1f} GFLOP/s  torch.mm {best['torch']:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
