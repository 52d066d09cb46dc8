"""Per-layer timings, XLA:CPU variants vs PyTorch, batch 32 float32.

Usage:
  python experiments/cpu_study/layer_bench.py [conv|lrn|pool|fc ...] [--no-torch] [--iters N]
  XLA_FLAGS=... python experiments/cpu_study/layer_bench.py conv --no-torch
Prints ms (min of --iters runs after 2 warm-ups; the box is shared, so min is the
least contaminated figure) for forward and forward+backward (vjp incl. forward).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import jax
import jax.numpy as jnp
import numpy as np
import variants as V
from common import bench, jax_block

B = 32
# name, input HW, cin, cout, k, stride, pad, groups, need_dx
CONVS = [
    ("conv1", 224, 3, 96, 11, 4, 2, 1, False),
    ("conv2", 27, 96, 256, 5, 1, 2, 2, True),
    ("conv3", 13, 256, 384, 3, 1, 1, 1, True),
    ("conv4", 13, 384, 384, 3, 1, 1, 2, True),
    ("conv5", 13, 384, 256, 3, 1, 1, 2, True),
]
rng = np.random.default_rng(0)
ITERS = 5


def rnd(*s, scale=1.0):
    return rng.standard_normal(s, dtype=np.float32) * scale


def tj(f, *args):
    # min over runs: the 2-core box is shared with other jobs, min is the least contaminated
    f = jax.jit(f)
    return min(bench(lambda: f(*args), sync=jax_block, iters=ITERS)[1]) * 1e3


def tt(f):
    return min(bench(f, iters=ITERS)[1]) * 1e3


def row(name, form, fwd, fb, flops=None, ref=None):
    s = f"{name:6s} {form:22s} fwd {fwd:8.2f} ms  fwd+bwd {fb:8.2f} ms"
    if flops:
        s += f"  ({3 * flops / fb / 1e6:6.1f} GFLOP/s train)"
    if ref:
        s += f"  torch/xla fwd {ref[0] / fwd:4.2f} fb {ref[1] / fb:4.2f}"
    print(s, flush=True)


def torch_conv(name, hw, cin, cout, k, s, p, g, need_dx, cl):
    import torch
    m = torch.nn.Conv2d(cin, cout, k, s, p, groups=g, bias=False)
    x = torch.from_numpy(rnd(B, cin, hw, hw))
    if cl:
        m = m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = m(x)
    ct = torch.ones_like(y)
    x.requires_grad_(need_dx)
    with torch.no_grad():
        fwd = tt(lambda: m(x))

    def fb():
        m.zero_grad(set_to_none=True)
        m(x).backward(ct)
    return fwd, tt(fb)


def do_conv(use_torch, forms_filter=None):
    for (name, hw, cin, cout, k, s, p, g, need_dx) in CONVS:
        ho = (hw + 2 * p - k) // s + 1
        flops = 2 * B * ho * ho * cout * k * k * cin // g
        ref = None
        if use_torch:
            for cl in (False, True):
                r = torch_conv(name, hw, cin, cout, k, s, p, g, need_dx, cl)
                row(name, "torch " + ("channels_last" if cl else "NCHW"), *r, flops)
                ref = r if ref is None or r[1] < ref[1] else ref
        x = jnp.asarray(rnd(B, hw, hw, cin))
        w = jnp.asarray(rnd(k, k, cin // g, cout, scale=0.05))
        forms = ["grouped", "split", "vmap", "im2col", "im2col_patches"] if g > 1 else ["grouped", "im2col", "im2col_patches"]
        if name == "conv1":
            forms += ["s2d", "s2d_im2col"]
        for form in forms:
            if forms_filter and form not in forms_filter:
                continue
            fn = V.CONV_FORMS[form]
            f = lambda x, w, fn=fn: fn(x, w, s, p, g)
            ct = jnp.ones(jax.eval_shape(f, x, w).shape, jnp.float32)
            fwd = tj(f, x, w)
            if need_dx:
                fb = tj(lambda x, w, ct: jax.vjp(f, x, w)[1](ct), x, w, ct)
            else:
                fb = tj(lambda x, w, ct: jax.vjp(lambda w: f(x, w), w)[1](ct), x, w, ct)
            row(name, form, fwd, fb, flops, ref)
        if not forms_filter or "nchw" in forms_filter:
            xn = jnp.asarray(rnd(B, cin, hw, hw))
            wn = jnp.asarray(rnd(cout, cin // g, k, k, scale=0.05))
            f = lambda x, w: V.conv_grouped_nchw(x, w, s, p, g)
            ct = jnp.ones(jax.eval_shape(f, xn, wn).shape, jnp.float32)
            fwd = tj(f, xn, wn)
            fb = tj(lambda x, w, ct: jax.vjp(f, x, w)[1](ct), xn, wn, ct)
            row(name, "grouped NCHW", fwd, fb, flops, ref)


def do_lrn(use_torch):
    for name, hw, c in (("lrn1", 55, 96), ("lrn2", 27, 256)):
        ref = None
        if use_torch:
            import torch
            m = torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
            for cl in (False, True):
                x = torch.from_numpy(rnd(B, c, hw, hw))
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                ct = torch.ones_like(x)
                with torch.no_grad():
                    fwd = tt(lambda: m(x))
                x.requires_grad_(True)

                def fb():
                    x.grad = None
                    m(x).backward(ct)
                r = (fwd, tt(fb))
                row(name, "torch " + ("channels_last" if cl else "NCHW"), *r)
                ref = r if ref is None or r[1] < ref[1] else ref
        x = jnp.asarray(rnd(B, hw, hw, c))
        ct = jnp.ones_like(x)
        for form in V.LRN_WINDOWS:
            for pf in ("pow", "rsqrt"):
                f = lambda x, form=form, pf=pf: V.lrn(x, 2, form, pf)
                row(name, f"{form}/{pf}", tj(f, x), tj(lambda x, ct: jax.vjp(f, x)[1](ct), x, ct), None, ref)


def do_pool(use_torch):
    for name, hw, c in (("pool1", 55, 96), ("pool2", 27, 256), ("pool5", 13, 256)):
        ref = None
        if use_torch:
            import torch
            m = torch.nn.MaxPool2d(3, 2)
            for cl in (False, True):
                x = torch.from_numpy(rnd(B, c, hw, hw))
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.no_grad():
                    ct = torch.ones_like(m(x))
                    fwd = tt(lambda: m(x))
                x.requires_grad_(True)

                def fb():
                    x.grad = None
                    m(x).backward(ct)
                r = (fwd, tt(fb))
                row(name, "torch " + ("channels_last" if cl else "NCHW"), *r)
                ref = r if ref is None or r[1] < ref[1] else ref
        x = jnp.asarray(rnd(B, hw, hw, c))
        for form, fn in V.POOL_FORMS.items():
            ct = jnp.ones(jax.eval_shape(fn, x).shape, jnp.float32)
            row(name, form, tj(fn, x), tj(lambda x, ct, fn=fn: jax.vjp(fn, x)[1](ct), x, ct), None, ref)


def do_fc(use_torch):
    for name, i, o in (("fc6", 9216, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 1000)):
        flops = 2 * B * i * o
        ref = None
        if use_torch:
            import torch
            m = torch.nn.Linear(i, o, bias=False)
            x = torch.from_numpy(rnd(B, i))
            ct = torch.ones(B, o)
            with torch.no_grad():
                fwd = tt(lambda: m(x))
            x.requires_grad_(True)

            def fb():
                m.zero_grad(set_to_none=True)
                x.grad = None
                m(x).backward(ct)
            ref = (fwd, tt(fb))
            row(name, "torch", *ref, flops)
        x = jnp.asarray(rnd(B, i))
        w = jnp.asarray(rnd(i, o, scale=0.01))
        ct = jnp.ones((B, o), jnp.float32)
        f = jnp.dot
        row(name, "jnp.dot", tj(f, x, w), tj(lambda x, w, ct: jax.vjp(f, x, w)[1](ct), x, w, ct), flops, ref)


def main():
    global ITERS
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="*", default=["conv", "lrn", "pool", "fc"])
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--forms", default="")
    a = ap.parse_args()
    ITERS = a.iters
    use_torch = not a.no_torch
    if use_torch:
        import torch
        torch.set_num_threads(2)
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')} loadavg={os.getloadavg()}", flush=True)
    for w in a.what:
        if w == "conv":
            do_conv(use_torch, a.forms.split(",") if a.forms else None)
        else:
            globals()["do_" + w](use_torch)


if __name__ == "__main__":
    main()
