"""Whole AlexNet training step (batch 32, 224x224, fp32): JAX variants vs PyTorch,
timed round-robin in one process so every contender sees the same machine load.

Usage:
  python experiments/cpu_study/full_step.py [--rounds 8] [--configs best,baseline,...]
  XLA_FLAGS=... python experiments/cpu_study/full_step.py
Configs are named in CONFIGS below; "torch" and "torch_cl" (channels_last) are PyTorch.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import jax
import jax.numpy as jnp
import numpy as np
import variants as V

B = 32
FLOPS_PER_IMG = 3 * 2 * 724_406_816
CONFIGS = {
    # prototype-like: XLA grouped convs, reduce_window LRN (pow) and pooling
    "grouped_all": dict(conv1="grouped", conv2="grouped", conv3="grouped", conv4="grouped",
                        conv5="grouped", lrn="reduce_window", lrn_pow="pow", pool="reduce_window"),
    # two separate convs per grouped layer, everything else stock
    "split_stock": dict(V.DEFAULT_CFG, lrn="reduce_window", lrn_pow="pow", pool="reduce_window"),
    "best": dict(V.DEFAULT_CFG),
    "best_pool_slices": dict(V.DEFAULT_CFG, pool="slices"),
    "best_pool_slices_custom": dict(V.DEFAULT_CFG, pool="slices_custom"),
    "best_lrn_slices": dict(V.DEFAULT_CFG, lrn="slices"),
    "best_conv1_s2d": dict(V.DEFAULT_CFG, conv1="s2d"),
}


def torch_step_fn(channels_last):
    import torch
    import torch.nn as nn
    torch.manual_seed(0)
    lrn = lambda: nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
    model = nn.Sequential(
        nn.Conv2d(3, 96, 11, 4, 2), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, 1, 2, groups=2), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, 1, 1, groups=2), nn.ReLU(),
        nn.Conv2d(384, 256, 3, 1, 1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Flatten(), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 1000))
    x = torch.randn(B, 3, 224, 224)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (B,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    lossf = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def jax_step_fn(cfg):
    key = jax.random.PRNGKey(0)
    params = V.init_params(key)
    state = [(params, jax.tree.map(jnp.zeros_like, params))]
    step = V.make_train_step(cfg)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((B, 224, 224, 3), dtype=np.float32))
    y = jnp.asarray(np.random.default_rng(1).integers(0, 1000, B).astype(np.int32))
    i = [0]

    def run():
        i[0] += 1
        state[0], loss = step(state[0], x, y, jax.random.fold_in(key, i[0]))
        return float(loss)
    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--configs", default="torch,torch_cl,split_stock,best")
    ap.add_argument("--peak", type=float, default=486.6e9, help="measured jnp.dot peak FLOP/s")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(2)
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')} torch threads={torch.get_num_threads()}", flush=True)
    fns = {}
    for name in a.configs.split(","):
        t0 = time.perf_counter()
        if name == "torch":
            fns[name] = torch_step_fn(False)
        elif name == "torch_cl":
            fns[name] = torch_step_fn(True)
        else:
            fns[name] = jax_step_fn(CONFIGS[name])
        l0 = fns[name]()
        fns[name]()  # warm-up
        print(f"  {name}: setup+compile+2 warm-up steps {time.perf_counter() - t0:.1f}s loss {l0:.3f}", flush=True)
    times = {n: [] for n in fns}
    cpus = {n: [] for n in fns}
    for r in range(a.rounds):
        for n, f in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            f()
            times[n].append(time.perf_counter() - t0)
            cpus[n].append(time.process_time() - c0)
    print(f"loadavg after: {os.getloadavg()}")
    tref = min(min(times[n]) for n in times if n.startswith("torch")) if any(n.startswith("torch") for n in times) else None
    cref = min(statistics.median(cpus[n]) for n in cpus if n.startswith("torch")) if tref else None
    for n, ts in times.items():
        best, med = min(ts), statistics.median(ts)
        s = (f"{n:26s} min {best*1e3:8.1f} ms ({B/best:6.1f} img/s)  median {med*1e3:8.1f} ms ({B/med:6.1f} img/s)"
             f"  {B*FLOPS_PER_IMG/best/a.peak*100:5.1f}% of peak")
        if tref:
            s += f"  vs best torch (min) {tref/best:4.2f}x"
        # CPU-seconds per step (all threads): less sensitive to other jobs on the box;
        # 2*B/cpu is the img/s two fully used cores would give.
        c = statistics.median(cpus[n])
        s += f"  | cpu {c:6.2f} s/step -> {2*B/c:6.1f} img/s@2cores"
        if cref:
            s += f" vs torch {cref/c:4.2f}x"
        print(s, flush=True)


if __name__ == "__main__":
    main()
