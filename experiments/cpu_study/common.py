"""Shared timing helpers for the CPU study (median of timed runs after warm-up)."""
import statistics
import time


def bench(fn, *, warmup=2, iters=7, sync=None, min_time=0.0):
    """Return (median_s, all_times). `fn` must block until done (or pass `sync`)."""
    for _ in range(warmup):
        out = fn()
        if sync:
            sync(out)
    times = []
    t_total = 0.0
    while len(times) < iters or t_total < min_time:
        t0 = time.perf_counter()
        out = fn()
        if sync:
            sync(out)
        dt = time.perf_counter() - t0
        times.append(dt)
        t_total += dt
    return statistics.median(times), times


def jax_block(x):
    import jax
    jax.block_until_ready(x)
