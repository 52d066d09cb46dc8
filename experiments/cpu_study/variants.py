"""Alternative implementations of AlexNet's layers for XLA:CPU, and a configurable
functional AlexNet training step built from them.

Activations are NHWC (or NCHW where a `layout` argument says so); the two towers
are the two halves of the channel axis, so grouped layers see channel halves.
Conv kernels are HWIO with I = Cin / groups and O = Cout (XLA's grouped layout).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# ----------------------------------------------------------------------------
# Convolutions
# ----------------------------------------------------------------------------


def _pads(pad):
    return ((pad, pad), (pad, pad))


def conv_grouped(x, w, stride, pad, groups):
    """One lax conv with feature_group_count (XLA's native grouped conv)."""
    return lax.conv_general_dilated(x, w, (stride, stride), _pads(pad),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=groups)


def conv_grouped_nchw(x, w_oihw, stride, pad, groups):
    return lax.conv_general_dilated(x, w_oihw, (stride, stride), _pads(pad),
                                    dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                    feature_group_count=groups)


def conv_split(x, w, stride, pad, groups):
    """`groups` separate dense convs on channel slices, concatenated."""
    if groups == 1:
        return conv_grouped(x, w, stride, pad, 1)
    xs = jnp.split(x, groups, axis=-1)
    ws = jnp.split(w, groups, axis=-1)
    return jnp.concatenate([conv_grouped(a, b, stride, pad, 1) for a, b in zip(xs, ws)], -1)


def conv_vmap(x, w, stride, pad, groups):
    """Towers as a leading vmapped axis (vmap of a dense conv over x and w)."""
    n, h, wd, c = x.shape
    xg = jnp.moveaxis(x.reshape(n, h, wd, groups, c // groups), 3, 0)
    kh, kw, ci, co = w.shape
    wg = jnp.moveaxis(w.reshape(kh, kw, ci, groups, co // groups), 3, 0)
    y = jax.vmap(lambda a, b: conv_grouped(a, b, stride, pad, 1))(xg, wg)
    return jnp.moveaxis(y, 0, 3).reshape(y.shape[1:4] + (-1,))


def patches_slices(x, k, stride, pad):
    """im2col by k*k strided slices; feature order (kh, kw, C) = HWIO reshape."""
    if pad:
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, h, w, c = x.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    cols = [lax.slice(x, (0, i, j, 0), (n, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c),
                      (1, stride, stride, 1)) for i in range(k) for j in range(k)]
    return jnp.concatenate(cols, axis=-1)


def conv_im2col(x, w, stride, pad, groups, patches="slices"):
    """Explicit im2col + one matmul per group."""
    kh, kw, ci, co = w.shape
    outs = []
    xs = jnp.split(x, groups, axis=-1) if groups > 1 else [x]
    ws = jnp.split(w, groups, axis=-1) if groups > 1 else [w]
    for xg, wg in zip(xs, ws):
        if patches == "slices":
            p = patches_slices(xg, kh, stride, pad)
            wm = wg.reshape(kh * kw * ci, -1)
        else:  # lax.conv_general_dilated_patches: features ordered (C, kh, kw)
            p = lax.conv_general_dilated_patches(xg, (kh, kw), (stride, stride), _pads(pad),
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
            wm = jnp.transpose(wg, (2, 0, 1, 3)).reshape(ci * kh * kw, -1)
        outs.append(jnp.dot(p, wm))
    return jnp.concatenate(outs, -1) if groups > 1 else outs[0]


def conv_s2d(x, w, stride, pad, groups):
    """Space-to-depth conv (for conv1 11x11/4): pad kernel to 12x12, fold 4x4 input
    blocks into channels, then a dense 3x3 stride-1 conv with 16*C input channels."""
    assert groups == 1
    s = stride
    kh, kw, ci, co = w.shape
    kb = -(-kh // s)  # kernel size in blocks (3)
    n, h, wd, c = x.shape
    ho = (h + 2 * pad - kh) // s + 1
    hp = (ho - 1 + kb) * s  # padded input extent that covers all blocks
    x = jnp.pad(x, ((0, 0), (pad, hp - h - pad), (pad, hp - wd - pad), (0, 0)))
    hb = hp // s
    x = x.reshape(n, hb, s, hb, s, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, hb, hb, s * s * c)
    w = jnp.pad(w, ((0, kb * s - kh), (0, kb * s - kw), (0, 0), (0, 0)))
    w = w.reshape(kb, s, kb, s, ci, co).transpose(0, 2, 1, 3, 4, 5).reshape(kb, kb, s * s * ci, co)
    return conv_grouped(x, w, 1, 0, 1)


def conv_s2d_im2col(x, w, stride, pad, groups):
    """Space-to-depth followed by im2col-by-slices (3x3 blocks) + one matmul."""
    assert groups == 1
    s = stride
    kh, kw, ci, co = w.shape
    kb = -(-kh // s)
    n, h, wd, c = x.shape
    ho = (h + 2 * pad - kh) // s + 1
    hp = (ho - 1 + kb) * s
    x = jnp.pad(x, ((0, 0), (pad, hp - h - pad), (pad, hp - wd - pad), (0, 0)))
    hb = hp // s
    x = x.reshape(n, hb, s, hb, s, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, hb, hb, s * s * c)
    w = jnp.pad(w, ((0, kb * s - kh), (0, kb * s - kw), (0, 0), (0, 0)))
    w = w.reshape(kb, s, kb, s, ci, co).transpose(0, 2, 1, 3, 4, 5).reshape(kb * kb * s * s * ci, co)
    return jnp.dot(patches_slices(x, kb, 1, 0), w)


CONV_FORMS = {
    "grouped": conv_grouped,
    "split": conv_split,
    "vmap": conv_vmap,
    "im2col": functools.partial(conv_im2col, patches="slices"),
    "im2col_patches": functools.partial(conv_im2col, patches="patches"),
    "s2d": conv_s2d,
    "s2d_im2col": conv_s2d_im2col,
}

# ----------------------------------------------------------------------------
# LRN (paper: k=2, n=5, alpha=1e-4, beta=0.75, within each tower)
# ----------------------------------------------------------------------------
K, N_LRN, ALPHA, BETA = 2.0, 5, 1e-4, 0.75


def _win_reduce_window(sq, groups):
    c = sq.shape[-1]
    g = sq.reshape(sq.shape[:-1] + (groups, c // groups))
    s = lax.reduce_window(g, 0.0, lax.add, (1,) * (g.ndim - 1) + (N_LRN,), (1,) * g.ndim,
                          ((0, 0),) * (g.ndim - 1) + ((2, 2),))
    return s.reshape(sq.shape)


def _band(c, groups):
    cg = c // groups
    i = np.arange(c)
    b = (np.abs(i[:, None] - i[None, :]) <= N_LRN // 2) & (i[:, None] // cg == i[None, :] // cg)
    return jnp.asarray(b.astype(np.float32))


def _win_matmul(sq, groups):
    return jnp.dot(sq, _band(sq.shape[-1], groups))


def _win_cumsum(sq, groups):
    c = sq.shape[-1]
    g = sq.reshape(sq.shape[:-1] + (groups, c // groups))
    cs = jnp.cumsum(g, axis=-1)
    cs = jnp.pad(cs, [(0, 0)] * (g.ndim - 1) + [(3, 2)], mode="edge")
    cs = cs.at[..., :3].set(0.0)
    s = cs[..., 5:] - cs[..., :-5]
    return s.reshape(sq.shape)


def _win_slices(sq, groups):
    c = sq.shape[-1]
    g = sq.reshape(sq.shape[:-1] + (groups, c // groups))
    p = jnp.pad(g, [(0, 0)] * (g.ndim - 1) + [(2, 2)])
    cg = c // groups
    s = sum(p[..., i:i + cg] for i in range(N_LRN))
    return s.reshape(sq.shape)


LRN_WINDOWS = {"reduce_window": _win_reduce_window, "matmul": _win_matmul,
               "cumsum": _win_cumsum, "slices": _win_slices}


def lrn(x, groups, form="slices", pow_form="pow"):
    s = LRN_WINDOWS[form](x * x, groups)
    d = K + ALPHA * s
    if pow_form == "pow":
        return x / d ** BETA
    # d^-0.75 = rsqrt(d) * sqrt(rsqrt(d))
    r = lax.rsqrt(d)
    return x * r * jnp.sqrt(r)


def lrn_nchw(x, groups, form="slices", pow_form="pow"):
    """LRN for NCHW input: window over axis 1."""
    y = lrn(jnp.moveaxis(x, 1, -1), groups, form, pow_form)
    return jnp.moveaxis(y, -1, 1)

# ----------------------------------------------------------------------------
# Max pool 3/2
# ----------------------------------------------------------------------------


def pool_reduce_window(x, k=3, s=2):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, k, k, 1), (1, s, s, 1), "VALID")


def pool_slices(x, k=3, s=2):
    """Max of k*k strided slices: backward is compares + strided pads (fusible)."""
    n, h, w, c = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    out = None
    for i in range(k):
        for j in range(k):
            v = lax.slice(x, (0, i, j, 0), (n, i + (ho - 1) * s + 1, j + (wo - 1) * s + 1, c), (1, s, s, 1))
            out = v if out is None else jnp.maximum(out, v)
    return out


def pool_separable(x, k=3, s=2):
    """Max over W (3 strided slices) then over H (3 strided slices)."""
    n, h, w, c = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    r = None
    for j in range(k):
        v = lax.slice(x, (0, 0, j, 0), (n, h, j + (wo - 1) * s + 1, c), (1, 1, s, 1))
        r = v if r is None else jnp.maximum(r, v)
    out = None
    for i in range(k):
        v = lax.slice(r, (0, i, 0, 0), (n, i + (ho - 1) * s + 1, wo, c), (1, s, 1, 1))
        out = v if out is None else jnp.maximum(out, v)
    return out


@jax.custom_vjp
def pool_rw_custom(x):
    return pool_reduce_window(x)


def _prc_fwd(x):
    y = pool_reduce_window(x)
    return y, (x, y)


def _prc_bwd(res, g):
    """Route each output grad to every input equal to the window max (ties all get it),
    written as 9 strided interior-padded adds, all elementwise -> one fusion."""
    x, y = res
    n, h, w, c = x.shape
    ho, wo = y.shape[1:3]
    dx = jnp.zeros_like(x)
    for i in range(3):
        for j in range(3):
            xs = lax.slice(x, (0, i, j, 0), (n, i + (ho - 1) * 2 + 1, j + (wo - 1) * 2 + 1, c), (1, 2, 2, 1))
            contrib = jnp.where(xs == y, g, 0.0)
            dx = dx + lax.pad(contrib, 0.0, ((0, 0, 0), (i, h - i - (ho - 1) * 2 - 1, 1),
                                             (j, w - j - (wo - 1) * 2 - 1, 1), (0, 0, 0)))
    return (dx,)


pool_rw_custom.defvjp(_prc_fwd, _prc_bwd)

POOL_FORMS = {"reduce_window": pool_reduce_window, "slices": pool_slices,
              "separable": pool_separable, "rw_custom": pool_rw_custom}


@jax.custom_vjp
def pool_slices_custom(x):
    return pool_slices(x)


def _psc_fwd(x):
    y = pool_slices(x)
    return y, (x, y)


pool_slices_custom.defvjp(_psc_fwd, _prc_bwd)
POOL_FORMS["slices_custom"] = pool_slices_custom

# ----------------------------------------------------------------------------
# Whole two-tower AlexNet training step
# ----------------------------------------------------------------------------
# name, k, stride, pad, cin, cout, groups
CONV_SPECS = [
    ("conv1", 11, 4, 2, 3, 96, 1),
    ("conv2", 5, 1, 2, 96, 256, 2),
    ("conv3", 3, 1, 1, 256, 384, 1),
    ("conv4", 3, 1, 1, 384, 384, 2),
    ("conv5", 3, 1, 1, 384, 256, 2),
]
FC_SPECS = [("fc6", 9216, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 1000)]

DEFAULT_CFG = dict(conv1="grouped", conv2="split", conv3="grouped", conv4="split", conv5="split",
                   lrn="reduce_window", lrn_pow="rsqrt", pool="rw_custom")


def init_params(key):
    params = {}
    for name, k, _, _, cin, cout, g in CONV_SPECS:
        key, sub = jax.random.split(key)
        params[name] = dict(w=jax.random.normal(sub, (k, k, cin // g, cout)) * 0.01,
                            b=jnp.zeros((cout,)))
    for name, i, o in FC_SPECS:
        key, sub = jax.random.split(key)
        params[name] = dict(w=jax.random.normal(sub, (i, o)) * 0.005, b=jnp.zeros((o,)))
    return params


def forward(params, x, key, cfg, train=True):
    pool = POOL_FORMS[cfg["pool"]]
    for name, k, s, p, cin, cout, g in CONV_SPECS:
        x = CONV_FORMS[cfg[name]](x, params[name]["w"], s, p, g) + params[name]["b"]
        x = jax.nn.relu(x)
        if name in ("conv1", "conv2"):
            x = lrn(x, 2, cfg["lrn"], cfg["lrn_pow"])
        if name in ("conv1", "conv2", "conv5"):
            x = pool(x)
    x = x.reshape(x.shape[0], -1)
    k1, k2 = jax.random.split(key)
    for name, kk in (("fc6", k1), ("fc7", k2)):
        x = jax.nn.relu(x @ params[name]["w"] + params[name]["b"])
        if train:
            keep = jax.random.bernoulli(kk, 0.5, x.shape)
            x = jnp.where(keep, x * 2.0, 0.0)
    return x @ params["fc8"]["w"] + params["fc8"]["b"]


def make_train_step(cfg, lr=0.01, momentum=0.9, wd=5e-4):
    def loss_fn(params, x, y, key):
        logits = forward(params, x, key, cfg)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def step(state, x, y, key):
        params, mom = state
        loss, g = jax.value_and_grad(loss_fn)(params, x, y, key)
        mom = jax.tree.map(lambda m, g, p: momentum * m + g + wd * p, mom, g, params)
        params = jax.tree.map(lambda p, m: p - lr * m, params, mom)
        return (params, mom), loss

    return jax.jit(step, donate_argnums=(0,))
