"""Training-step benchmark, the library of `python -m benchmarks.step` (no flags here).

For each model (a module of configs/: paper, one_tower), dtype and batch size, on
jax.devices():

* train step: the project's own jitted step (`steps.build`: device-side random crop,
  flip, PCA lighting and mean subtraction of uint8 input.resize_size images, forward with
  dropout, cross-entropy, backward, optimizer.paper_sgd), the same jitted function
  `run.train.train_and_evaluate` runs (same mesh, shardings, state donated); fed one fixed
  synthetic uint8 batch already on the device.
* forward: `nets.apply(train=False)` on float32 model.input_size images.
* compile time (trace + lowering + XLA compile of the first call, from jax.monitoring),
  and recompiles = XLA compilations of each function after its first call (must be 0).
* the matmul peak in the same run: jnp.dot of square matrices (config.peak_sizes) in the
  benchmark dtype, best of a few, measured in every round; MFU = model FLOPs / time / peak
  with model FLOPs = 2 x ModelSpec.macs_per_image() (forward) or 6 x (train step).
* with config.torch (default: when torch is importable): the same network in PyTorch
  (benchmarks/torch_alexnet.py, channels_last, torch.set_num_threads = CPU cores) on the
  same device and batch. JAX and PyTorch run round-robin, one call each per round, in one
  process, so both see the same machine load; CPU-seconds per call (time.process_time, all
  threads) are reported too because the machine may be shared: cores x batch / CPU-s is
  the img/s the call would reach with every core to itself.
* config.loop: `train.train_and_evaluate` on dataset.name='synthetic' (pre-made batches, no
  decode), same config and batch; its img/s (from metrics.jsonl, log windows after the
  first, which holds the compile; no eval, no checkpoint inside the timed windows) against
  the bare step measured just before and after it.

`run(config)` returns the JSON report (fields: docs/benchmarks.md); `format_table` prints it.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import importlib
import importlib.util
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alexnet_jax.common import config_lib, lazy_tf
from alexnet_jax.data import pipeline, sources
from alexnet_jax.data import statistics as dataset_statistics  # `statistics` is the stdlib's here
from alexnet_jax.model import nets, sharding, steps
from alexnet_jax.run import evaluate
from benchmarks import machine

_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                   '/jax/core/compile/jaxpr_to_mlir_module_duration',
                   '/jax/core/compile/backend_compile_duration')
_BACKEND_COMPILE = '/jax/core/compile/backend_compile_duration'


def torch_available() -> bool:
  return importlib.util.find_spec('torch') is not None


def split_list(text: str, kind: type = str) -> list:
  """'a,b' -> ['a', 'b'] (empty items dropped), each converted by `kind`."""
  return [kind(v.strip()) for v in text.split(',') if v.strip()]


def batch_sizes(config: ml_collections.ConfigDict) -> list[int]:
  """config.batch_sizes, or the default for the backend: 32 on CPU, 128 and 512 elsewhere."""
  if config.batch_sizes:
    return split_list(config.batch_sizes, int)
  return [32] if jax.default_backend() == 'cpu' else [128, 512]


def parse_overrides(text: str) -> dict[str, Any]:
  """'model.fc_widths=(32,32);input.resize_size=72' -> {key: Python literal (or string)}."""
  out = {}
  for item in (i.strip() for i in text.split(';')):
    if not item:
      continue
    key, sep, value = item.partition('=')
    if not sep:
      raise ValueError(f'config.overrides: {item!r} is not KEY=VALUE')
    try:
      out[key.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      out[key.strip()] = value.strip()
  return out


def model_config(model: str, dtype: str, batch_size: int,
                 overrides: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
  """configs/<model>.py (`name` or `name:arg`) with the benchmark's dtype, batch, overrides."""
  name, _, arg = model.partition(':')
  try:
    module = importlib.import_module(f'configs.{name}')
  except ModuleNotFoundError as e:
    if e.name not in ('configs', f'configs.{name}'):
      raise
    raise ValueError(f'config.models: {name!r} is not a module of configs/ (e.g. paper, '
                     'one_tower); run from the repository root') from None
  config = module.get_config(arg or None)
  config.model.dtype = dtype
  config.batch_size = batch_size
  config.eval_batch_size = batch_size
  for key, value in (overrides or {}).items():
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


@contextlib.contextmanager
def _compile_timer():
  """Seconds spent tracing, lowering and compiling inside the block (jax.monitoring)."""
  total = [0.0]

  def listener(event, duration, **_):
    if event in _COMPILE_EVENTS:
      total[0] += duration

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield total
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


class _Timed:
  """Wall and CPU seconds of each call of fn (which must finish its work before returning)."""

  def __init__(self, fn: Callable[[], Any]):
    self.fn = fn
    self.wall: list[float] = []
    self.cpu: list[float] = []

  def __call__(self, record: bool = True):
    c0, t0 = time.process_time(), time.perf_counter()
    out = self.fn()
    t1, c1 = time.perf_counter(), time.process_time()
    if record:
      self.wall.append(t1 - t0)
      self.cpu.append(c1 - c0)
    return out

  def summary(self, images: int, flops: float, peak: float, cores: int,
              peak_cpu: float = 0.0) -> dict[str, float]:
    """mfu: vs the wall-clock matmul peak; mfu_cpu: FLOPs per CPU-second of both (all
    cores busy for us), which a shared machine's load disturbs much less."""
    med, best = statistics.median(self.wall), min(self.wall)
    cpu = statistics.median(self.cpu)
    return {'mfu_cpu': flops * cores / cpu / peak_cpu if peak_cpu else float('nan'),
            'ms_median': med * 1e3, 'ms_min': best * 1e3,
            'images_per_sec': images / med, 'images_per_sec_best': images / best,
            'cpu_s': cpu, 'images_per_sec_all_cores_cpu': cores * images / cpu,
            'tflops': flops / med / 1e12, 'mfu': flops / med / peak,
            'mfu_best': flops / best / peak, 'runs': len(self.wall)}


class MatmulPeak:
  """jnp.dot FLOP/s of square matrices: best over sizes and calls, measured per round."""

  def __init__(self, dtype: str, sizes: tuple[int, ...]):
    jdt = jnp.dtype(dtype)
    self.cases = []
    for n in sizes:
      a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(jdt)
      b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32).astype(jdt)
      f = jax.jit(jnp.dot)
      f(a, b).block_until_ready()
      self.cases.append((n, f, a, b))
    self.best = 0.0
    self.best_cpu = 0.0          # FLOPs per CPU-second x cores (load-insensitive)
    self.cores = os.cpu_count() or 1

  def measure(self, reps: int = 2) -> float:
    for n, f, a, b in self.cases:
      for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        f(a, b).block_until_ready()
        t, c = time.perf_counter() - t0, time.process_time() - c0
        self.best = max(self.best, 2 * n ** 3 / t)
        if c > 0:
          self.best_cpu = max(self.best_cpu, 2 * n ** 3 * self.cores / c)
    return self.best


class JaxCase:
  """The real jitted train step and the forward pass for one config."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.spec = nets.ModelSpec.from_config(config.model)
    self.mesh = sharding.make_mesh(config.mesh)
    # The training loop's own steps (steps.build), not a copy of them.
    built = steps.build(config, config_lib.validate(config, mesh_shape=dict(self.mesh.shape)),
                        self.mesh)
    self.state = built.init_state(config.seed)
    shardings, data = built.state_shardings, built.batch
    batch = pipeline.synthetic_batch(config, config.batch_size, 0)
    self.batch = evaluate.to_global(batch, data)
    self.mean = built.device_mean(None)
    # Timing only: ImageNet's published PCA (the values do not change the work).
    self.lighting = built.device_lighting(dataset_statistics.published_rgb_pca(config))
    s = self.spec.input_size
    images = np.random.default_rng(1).standard_normal((config.batch_size, s, s, 3), np.float32)
    self.images = jax.device_put(images * 50.0, data)
    self.step_fn = built.train
    with jax.set_mesh(self.mesh):
      self.forward_fn = jax.jit(
          lambda params, x: nets.apply(self.spec, params, x, train=False),
          in_shardings=(shardings.params, data), out_shardings=data)
    self.compile_time = {}
    self.last_loss = float('nan')
    self._running: str | None = None        # which function is inside its call
    self._compiles: collections.Counter = collections.Counter()
    self._counting = False

  def _on_event(self, event: str, duration: float, **_) -> None:
    if event == _BACKEND_COMPILE and self._running is not None:
      self._compiles[self._running] += 1

  def step(self):
    self._running = 'step'
    try:
      with jax.set_mesh(self.mesh):
        self.state, metrics = self.step_fn(self.state, self.batch, self.mean, self.lighting)
      jax.block_until_ready((self.state, metrics))
    finally:
      self._running = None
    return metrics

  def forward(self):
    self._running = 'forward'
    try:
      with jax.set_mesh(self.mesh):
        return self.forward_fn(self.state.params, self.images).block_until_ready()
    finally:
      self._running = None

  def first_calls(self, forward: bool) -> None:
    """Compiles (timed) and, from then on, counts any further compilation as a recompile."""
    for name, fn in (('step', self.step), ('forward', self.forward)):
      if name == 'forward' and not forward:
        continue
      with _compile_timer() as t:
        wall = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - wall
      self.compile_time[name] = t[0]
      self.compile_time[name + '_first_call'] = wall
      if name == 'step':
        self.last_loss = float(out['loss'])
    jax.monitoring.register_event_duration_secs_listener(self._on_event)
    self._counting = True

  def recompiles(self) -> dict[str, int]:
    """XLA compilations of the step and the forward since first_calls (stops counting)."""
    if self._counting:
      jax.monitoring.unregister_event_duration_listener(self._on_event)
      self._counting = False
    return {'step': self._compiles['step'], 'forward': self._compiles['forward']}


def _load() -> list[float]:
  return [round(v, 2) for v in os.getloadavg()]


def _torch_device(jax_backend: str) -> str | None:
  torch = lazy_tf.import_torch()
  if jax_backend == 'cpu':
    return 'cpu'
  if jax_backend == 'gpu' and torch.cuda.is_available():
    return 'cuda'
  return None


def run_case(model: str, dtype: str, batch_size: int, *, runs: int, use_torch: bool,
             forward: bool, peak_sizes: tuple[int, ...], loop: bool = False,
             loop_windows: int = 2, overrides: dict | None = None,
             log: Callable[[str], None] = print) -> dict:
  """One model x dtype x batch size: the `results[i]` of the report."""
  config = model_config(model, dtype, batch_size, overrides)
  cores = os.cpu_count() or 1
  load_before = _load()
  t0 = time.perf_counter()
  case = JaxCase(config)
  setup_s = time.perf_counter() - t0
  case.first_calls(forward)
  log(f'[{model} {dtype} b{batch_size}] setup {setup_s:.1f}s, compile step '
      f'{case.compile_time["step"]:.1f}s, loss {case.last_loss:.3f}, load {load_before}')
  peak = MatmulPeak(dtype, peak_sizes)
  macs = sum(case.spec.macs_per_image().values())
  flops_train, flops_fwd = 6 * macs * batch_size, 2 * macs * batch_size

  timed = {'jax_step': _Timed(case.step)}
  if forward:
    timed['jax_forward'] = _Timed(case.forward)
  torch_note = None
  if use_torch:
    torch = lazy_tf.import_torch()

    from benchmarks import torch_alexnet
    device = _torch_device(jax.default_backend())
    if device is None:
      torch_note = f'torch has no device for JAX backend {jax.default_backend()!r}'
    else:
      torch.set_num_threads(cores)     # XLA:CPU uses one thread per core too
      twin = torch_alexnet.Twin(case.spec, batch_size, dtype=dtype, device=device)
      timed['torch_step'] = _Timed(twin.train_step)
      if forward:
        timed['torch_forward'] = _Timed(twin.forward)
      twin.train_step()
      if forward:
        twin.forward()
  for t in timed.values():          # warm-up round (not recorded)
    t(record=False)
  peak.measure(1)
  for _ in range(runs):             # round-robin: every contender once per round
    for t in timed.values():
      t()
    peak.measure()
  recompiles = case.recompiles()
  load_after = _load()

  result = {
      'model': model, 'dtype': dtype, 'batch_size': batch_size,
      'devices': [str(d) for d in jax.devices()], 'backend': jax.default_backend(),
      'cores': cores, 'load_before': load_before, 'load_after': load_after,
      'params': nets.count_params(case.state.params), 'macs_per_image': macs,
      'train_step_kind': 'steps.build(...).train (uint8 resize_size input, device preprocess, '
                         'paper SGD, state donated)',
      'compile_time_s': case.compile_time, 'recompiles': recompiles,
      'cache_size': {k: v + 1 for k, v in recompiles.items()},
      'matmul_peak_flops': peak.best, 'matmul_peak_flops_cpu': peak.best_cpu,
      'peak_sizes': list(peak_sizes),
      'loss_first_step': case.last_loss,
  }
  result['step'] = timed['jax_step'].summary(batch_size, flops_train, peak.best, cores,
                                             peak.best_cpu)
  if forward:
    result['forward'] = timed['jax_forward'].summary(batch_size, flops_fwd, peak.best, cores,
                                                     peak.best_cpu)
  if 'torch_step' in timed:
    result['torch'] = {'step': timed['torch_step'].summary(batch_size, flops_train, peak.best,
                                                          cores, peak.best_cpu),
                       'threads': torch.get_num_threads(), 'version': torch.__version__,
                       'device': device, 'channels_last': True}
    if forward:
      result['torch']['forward'] = timed['torch_forward'].summary(
          batch_size, flops_fwd, peak.best, cores, peak.best_cpu)
    result['ratio_vs_torch'] = ratios_vs_torch(result)
  if torch_note:
    result['torch_note'] = torch_note
  if loop:
    result['loop'] = measure_loop(config, case, runs=runs, windows=loop_windows, log=log)
  return result


def ratios_vs_torch(r: dict) -> dict[str, float]:
  """ours/PyTorch speed = PyTorch time / our time: median wall, best wall, CPU-s."""
  out = {}
  for kind in ('step', 'forward'):
    if kind in r and kind in r['torch']:
      ours, theirs = r[kind], r['torch'][kind]
      out[kind] = theirs['ms_median'] / ours['ms_median']
      out[kind + '_best'] = theirs['ms_min'] / ours['ms_min']
      out[kind + '_cpu'] = theirs['cpu_s'] / ours['cpu_s']
  return out


def measure_loop(config, case: JaxCase, *, runs: int, windows: int,
                 log: Callable[[str], None] = print) -> dict:
  """train.train_and_evaluate on synthetic data vs the bare step, same config and batch."""
  # Here, not at the top: the training loop's metric writers (CLU) need TensorFlow, which
  # the bare step does not (an accelerator image without TensorFlow runs everything else).
  from alexnet_jax.run import train
  def bare() -> float:
    t = _Timed(case.step)
    for _ in range(runs):
      t()
    return config.batch_size / statistics.median(t.wall)

  before = bare()
  cfg = config.copy_and_resolve_references()
  cfg.dataset.name = sources.SYNTHETIC
  cfg.log_every_steps = runs
  cfg.num_train_steps = 10 ** 9
  cfg.eval_every_steps = 10 ** 9
  cfg.checkpoint_every_steps = 10 ** 9
  workdir = tempfile.mkdtemp(prefix='bench_loop_')
  try:
    t0 = time.perf_counter()
    train.train_and_evaluate(cfg, workdir, max_steps=runs * (1 + windows))
    total = time.perf_counter() - t0
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      records = [json.loads(line) for line in f]
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  rates = [r['images_per_sec'] for r in records if r.get('split') == 'train']
  after = bare()
  bare_rate = (before + after) / 2
  loop_rate = statistics.median(rates[1:]) if len(rates) > 1 else float('nan')
  log(f'  loop: {loop_rate:.2f} img/s (windows {[round(r, 2) for r in rates]}) vs bare step '
      f'{before:.2f}/{after:.2f} img/s before/after')
  return {'images_per_sec': loop_rate, 'window_images_per_sec': rates,
          'bare_images_per_sec_before': before, 'bare_images_per_sec_after': after,
          'overhead': 1.0 - loop_rate / bare_rate, 'steps': runs * (1 + windows),
          'wall_s_total': total,
          'includes': 'host iterator (pre-made synthetic uint8 batches), prefetch/device_put, '
                      'jitted train step, metrics kept on device and fetched at log steps, '
                      'LR controller, progress reporting; excludes the first log window '
                      '(compile), eval and checkpoint (intervals set beyond the run; the final '
                      'checkpoint is written after the last timed window)'}


def format_table(results: list[dict]) -> str:
  head = ('| model | kernels | dtype | batch | train img/s med (best) | fwd img/s med | '
          'compile s | recompiles | peak GFLOP/s wall/CPU | MFU train wall (best; CPU) | MFU fwd | '
          'torch train img/s | ours/torch train (best, CPU) | ours/torch fwd | '
          'CPU-s/step ours/torch | loop img/s (overhead) | load |')
  rows = [head, '|' + '---|' * (head.count('|') - 1)]
  na = '-'
  for r in results:
    s, f = r['step'], r.get('forward')
    t = r.get('torch', {})
    ratio = r.get('ratio_vs_torch', {})
    loop = r.get('loop')
    rows.append('| ' + ' | '.join([
        r['model'], r.get('kernels', 'auto'), r['dtype'], str(r['batch_size']),
        f"{s['images_per_sec']:.1f} ({s['images_per_sec_best']:.1f})",
        f"{f['images_per_sec']:.1f}" if f else na,
        f"{r['compile_time_s']['step']:.1f}",
        f"{r['recompiles']['step']}/{r['recompiles']['forward']}",
        f"{r['matmul_peak_flops'] / 1e9:.0f}/{r['matmul_peak_flops_cpu'] / 1e9:.0f}",
        f"{100 * s['mfu']:.1f}% ({100 * s['mfu_best']:.1f}%; {100 * s['mfu_cpu']:.1f}%)",
        f"{100 * f['mfu']:.1f}%" if f else na,
        f"{t['step']['images_per_sec']:.1f}" if t else na,
        (f"{ratio['step']:.2f}x ({ratio['step_best']:.2f}x, {ratio['step_cpu']:.2f}x)"
         if ratio else na),
        f"{ratio['forward']:.2f}x" if 'forward' in ratio else na,
        f"{s['cpu_s']:.2f}/{t['step']['cpu_s']:.2f}" if t else f"{s['cpu_s']:.2f}/-",
        f"{loop['images_per_sec']:.1f} ({100 * loop['overhead']:+.1f}%)" if loop else na,
        f"{r['load_before'][0]}->{r['load_after'][0]}",
    ]) + ' |')
  return '\n'.join(rows)


KERNEL_FIELDS = ('model.conv_impl', 'model.pool_grad', 'model.lrn_impl',
                 'model.conv_weight_grad')


def kernel_overrides(variant: str) -> dict[str, str]:
  """'auto' -> {}; 'CONV:POOL_GRAD:LRN[:WEIGHT_GRAD]' -> those model.* overrides (a
  three-part variant leaves model.conv_weight_grad at its default)."""
  if variant == 'auto':
    return {}
  parts = variant.split(':')
  if len(parts) not in (3, 4):
    raise ValueError(f'config.kernels: {variant!r} is not auto or '
                     'CONV:POOL_GRAD:LRN[:WEIGHT_GRAD] (e.g. grouped:autodiff:pow:native)')
  return dict(zip(KERNEL_FIELDS[:len(parts)], parts, strict=True))


def check(config: ml_collections.ConfigDict) -> None:
  """Refuses a bad benchmark config before anything runs; errors name the field."""
  for variant in split_list(config.kernels):
    chosen = kernel_overrides(variant)
    nets.ModelSpec.from_config({k.split('.')[1]: v for k, v in chosen.items()})
  if config.runs < 1:
    raise ValueError(f'config.runs={config.runs}: must be >= 1')
  if not split_list(config.peak_sizes, int):
    raise ValueError('config.peak_sizes is empty: give square matmul sizes, e.g. 2048,4096')
  overrides = parse_overrides(config.overrides)
  for model in split_list(config.models) or ['']:
    for dtype in split_list(config.dtypes) or ['']:
      config_of_case = model_config(model, dtype, 8, overrides)
      try:
        nets.ModelSpec.from_config(config_of_case.model)
      except ValueError as e:
        raise ValueError(f'case {model} {dtype} (from config.models, config.dtypes and '
                         f'config.overrides): {e}') from None


def run(config: ml_collections.ConfigDict, *, command: str = '',
        log: Callable[[str], None] = print,
        on_case: Callable[[dict], None] | None = None) -> dict:
  """Every case of the benchmark config (benchmarks/configs/step.py); the JSON report.

  `on_case(report)` is called after each case with the report so far (`complete`
  False until the last case): the CLI writes it, so a run stopped by a time limit keeps
  the cases it finished.
  """
  check(config)
  m = machine.describe()
  log(machine.format_machine(m))
  overrides = parse_overrides(config.overrides)
  peak_sizes = tuple(split_list(config.peak_sizes, int))
  use_torch = torch_available() if config.torch is None else config.torch
  results = []

  def report(complete: bool) -> dict:
    return {'command': command, 'config': config.to_dict(), 'machine': m,
            'jax_version': jax.__version__, 'devices': [str(d) for d in jax.devices()],
            'cpu_count': os.cpu_count(), 'xla_flags': os.environ.get('XLA_FLAGS', ''),
            'overrides': {k: repr(v) for k, v in overrides.items()},
            'complete': complete, 'results': list(results)}

  for model in split_list(config.models):
    for dtype in split_list(config.dtypes):
      for b in batch_sizes(config):
        for variant in split_list(config.kernels):
          result = run_case(model, dtype, b, runs=config.runs, use_torch=use_torch,
                            forward=config.forward, peak_sizes=peak_sizes,
                            loop=config.loop, loop_windows=config.loop_windows,
                            overrides={**overrides, **kernel_overrides(variant)}, log=log)
          spec = nets.ModelSpec.from_config(
              model_config(model, dtype, b, {**overrides, **kernel_overrides(variant)}).model)
          result['kernels'] = ':'.join(spec.kernels(jax.default_backend()))
          results.append(result)
          log(format_table([result]).splitlines()[-1])
          if on_case is not None:
            on_case(report(complete=False))

  return report(complete=True)


LEGEND = ('train = the jitted train step (device preprocess + fwd/bwd + paper SGD, state '
          'donated); MFU vs the jnp.dot peak measured in the same run; ratios: median wall '
          '(best wall, CPU-seconds)')


def write_json(report: dict, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(report, f, indent=1)
