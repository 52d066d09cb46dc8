"""Numerical check that every layer variant matches the reference (values and grads).

Usage: python experiments/cpu_study/check_variants.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import jax
import jax.numpy as jnp
import numpy as np
import variants as V

rng = np.random.default_rng(0)


def rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-12))


def check_conv(name, shape, k, cin_g, cout, stride, pad, groups, forms):
    x = jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((k, k, cin_g, cout), dtype=np.float32) * 0.05)
    ref = V.conv_grouped(x, w, stride, pad, groups)
    gref = jax.grad(lambda x, w: jnp.sum(jnp.sin(V.conv_grouped(x, w, stride, pad, groups))), (0, 1))(x, w)
    for f in forms:
        fn = V.CONV_FORMS[f]
        y = fn(x, w, stride, pad, groups)
        g = jax.grad(lambda x, w: jnp.sum(jnp.sin(fn(x, w, stride, pad, groups))), (0, 1))(x, w)
        print(f"{name:6s} {f:15s} y {rel(y, ref):.1e} dx {rel(g[0], gref[0]):.1e} dw {rel(g[1], gref[1]):.1e}")


check_conv("conv1", (2, 224, 224, 3), 11, 3, 96, 4, 2, 1, ["im2col", "im2col_patches", "s2d", "s2d_im2col"])
check_conv("conv2", (2, 27, 27, 96), 5, 48, 256, 1, 2, 2, ["split", "vmap", "im2col", "im2col_patches"])

x = jnp.asarray(rng.standard_normal((2, 27, 27, 256), dtype=np.float32)) * 30
ref = V.lrn(x, 2, "reduce_window")
gref = jax.grad(lambda x: jnp.sum(jnp.sin(V.lrn(x, 2, "reduce_window"))))(x)
for form in V.LRN_WINDOWS:
    for pf in ("pow", "rsqrt"):
        y = V.lrn(x, 2, form, pf)
        g = jax.grad(lambda x: jnp.sum(jnp.sin(V.lrn(x, 2, form, pf))))(x)
        print(f"lrn {form:13s} {pf:5s} y {rel(y, ref):.1e} dx {rel(g, gref):.1e}")

x = jnp.asarray(rng.standard_normal((2, 27, 27, 64), dtype=np.float32))
ref = V.pool_reduce_window(x)
gref = jax.grad(lambda x: jnp.sum(jnp.sin(V.pool_reduce_window(x))))(x)
for form, fn in V.POOL_FORMS.items():
    y = fn(x)
    g = jax.grad(lambda x: jnp.sum(jnp.sin(fn(x))))(x)
    print(f"pool {form:13s} y {rel(y, ref):.1e} dx {rel(g, gref):.1e}")
