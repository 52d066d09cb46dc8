"""conv1 (11x11/4, 3->96, batch 32) probes: does an optimization barrier between the
im2col patches and the matmul help (keeps XLA from fusing the patch gather into the dot)?

Usage: python experiments/cpu_study/conv1_probe.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import jax
import jax.numpy as jnp
import numpy as np
import variants as V
from common import bench, jax_block
from jax import lax


def s2d_patches(x, s=4, k=11, pad=2):
    kb = -(-k // s)
    n, h, wd, c = x.shape
    ho = (h + 2 * pad - k) // s + 1
    hp = (ho - 1 + kb) * s
    x = jnp.pad(x, ((0, 0), (pad, hp - h - pad), (pad, hp - wd - pad), (0, 0)))
    hb = hp // s
    x = x.reshape(n, hb, s, hb, s, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, hb, hb, s * s * c)
    return V.patches_slices(x, kb, 1, 0)


def s2d_w(w, s=4):
    kh, kw, ci, co = w.shape
    kb = -(-kh // s)
    w = jnp.pad(w, ((0, kb * s - kh), (0, kb * s - kw), (0, 0), (0, 0)))
    return w.reshape(kb, s, kb, s, ci, co).transpose(0, 2, 1, 3, 4, 5).reshape(kb * kb * s * s * ci, co)


def conv1_barrier(x, w):
    p = lax.optimization_barrier(s2d_patches(x))
    return jnp.dot(p.reshape(-1, p.shape[-1]), s2d_w(w)).reshape(p.shape[:3] + (-1,))


def conv1_im2col_barrier(x, w):
    p = lax.optimization_barrier(V.patches_slices(x, 11, 4, 2))
    return jnp.dot(p.reshape(-1, p.shape[-1]), w.reshape(-1, w.shape[-1])).reshape(p.shape[:3] + (-1,))


def main():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((32, 224, 224, 3), dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((11, 11, 3, 96), dtype=np.float32) * 0.05)
    forms = {"grouped(native)": lambda x, w: V.conv_grouped(x, w, 4, 2, 1),
             "s2d_im2col": lambda x, w: V.conv_s2d_im2col(x, w, 4, 2, 1),
             "s2d_im2col+barrier": conv1_barrier,
             "im2col+barrier": conv1_im2col_barrier,
             "patches only (s2d)": lambda x, w: s2d_patches(x)}
    ref = forms["grouped(native)"](x, w)
    for name, f in forms.items():
        y = f(x, w)
        err = float(jnp.max(jnp.abs(y - ref))) if y.shape == ref.shape else float("nan")
        fj = jax.jit(f)
        fwd = min(bench(lambda: fj(x, w), sync=jax_block, iters=7)[1])
        if name.startswith("patches"):
            print(f"{name:22s} fwd {fwd*1e3:7.1f} ms", flush=True)
            continue
        ct = jnp.ones_like(ref)
        fb_fn = jax.jit(lambda x, w, ct: jax.vjp(lambda w: f(x, w), w)[1](ct))
        fb = min(bench(lambda: fb_fn(x, w, ct), sync=jax_block, iters=7)[1])
        print(f"{name:22s} fwd {fwd*1e3:7.1f} ms  fwd+dW {fb*1e3:7.1f} ms  maxerr {err:.1e}  loadavg {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
