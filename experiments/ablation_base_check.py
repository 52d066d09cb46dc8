r"""Shows that every ablated component is active in an ablation base config.

  python -m experiments.ablation_base_check --config=configs/ablation_base.py \
      [--workdir=RUN_WORKDIR ...] [--out=experiments/results/ablations_hard/base_check.md]

On one real batch of the config's eval split (centre crop, minus the mean image, times
input.scale: exactly what the model sees), with the parameters at init (config.seed) and
those of each trained run's latest checkpoint (--workdir, repeatable):

* LRN: the multiplier (k + alpha * sum over the channel window of a^2)^-beta of conv1 and
  conv2 (per tower, as the model applies it), quantiles over every position and channel.
  A constant multiplier (e.g. 2^-0.75 = 0.5946 everywhere) means 'no LRN' only rescales.
* Dropout: the fraction of the fc6/fc7 units that are active (> 0) in training mode and
  dropped (zeroed) by the dropout mask.
* PCA lighting: the std of the per-image lighting shift, in the model's input units,
  against the std of the input itself.

The functions are importable (tests use them on tiny models).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

QUANTILES = (0.0, 0.05, 0.5, 0.95, 1.0)
QUANTILE_NAMES = ('min', '5%', 'median', '95%', 'max')

_CONFIG = flags.DEFINE_string('config', 'configs/ablation_base.py',
                              'Config file (path.py or path.py:arg), as main.py takes it.')
_WORKDIRS = flags.DEFINE_multi_string('workdir', [],
                                      'Trained run(s) of that config: their latest checkpoint.')
_OUT = flags.DEFINE_string('out', None, 'Write the Markdown report here (default: print only).')
_BATCH = flags.DEFINE_integer('batch', 200, 'Images in the batch.')


def lrn_multiplier_quantiles(spec, params, images) -> dict[str, dict[str, float]]:
  """{'conv1': {'min': .., '5%': .., 'median': .., '95%': .., 'max': ..}, 'conv2': ...}.

  The multiplier of the LRN after conv1 and conv2's ReLU, computed per tower (or across
  both for lrn_across_towers), over all images, positions and channels. The paper's
  formula is used when the spec has no LRN, to show what it would do.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np

  from alexnet_jax.model import layers, nets
  formula = spec.lrn if spec.lrn != 'none' else 'paper'
  # Jitted: op by op, the forward's eager dispatch took minutes on XLA:CPU.
  acts = jax.jit(nets.intermediates, static_argnums=0)(spec, params, jnp.asarray(images))
  out = {}
  for name in ('conv1', 'conv2'):
    a = acts[name]
    if spec.lrn_across_towers or spec.towers == 1:
      scales = [layers.lrn_scale(a, formula, gain=spec.lrn_gain)]
    else:
      scales = [layers.lrn_scale(t, formula, gain=spec.lrn_gain)
                for t in jnp.split(a, spec.towers, axis=-1)]
    values = np.concatenate([np.asarray(s).ravel() for s in scales])
    out[name] = dict(zip(QUANTILE_NAMES, (float(q) for q in np.quantile(values, QUANTILES)),
                         strict=True))
  return out


def dropout_fractions(spec, params, images, seed: int = 0) -> dict[str, float]:
  """{'fc6': f, 'fc7': f}: of the units active (> 0) in training mode, the fraction the
  dropout mask zeroes (about model.dropout_rate when dropout is on, 0 when off)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from alexnet_jax.model import nets
  if spec.dropout_rate == 0:
    return {'fc6': 0.0, 'fc7': 0.0}
  acts = jax.jit(lambda p, x, k: nets.intermediates(spec, p, x, train=True, dropout_key=k))(
      params, jnp.asarray(images), jax.random.key(seed))
  out = {}
  for name in ('fc6', 'fc7'):
    before, after = np.asarray(acts[name]), np.asarray(acts[name + '_dropout'])
    active = before > 0
    out[name] = float((after[active] == 0).mean()) if active.any() else float('nan')
  return out


def lighting_vs_input_std(config, inputs, *, samples: int = 20000, seed: int = 0
                          ) -> dict[str, float]:
  """Std of the PCA lighting shift (per channel value, in model input units, alpha ~
  N(0, input.pca_lighting)) and of the model's inputs (`inputs`, already preprocessed)."""
  import numpy as np

  from alexnet_jax.data import augment
  sigma = float(config.input.pca_lighting)
  alpha = np.random.default_rng(seed).normal(0.0, sigma, size=(samples, 3)).astype(np.float32)
  shift = np.asarray(augment.lighting_shift(alpha)) * float(config.input.scale)
  input_std = float(np.asarray(inputs).std())
  shift_std = float(shift.std())
  return {'pca_sigma': sigma, 'lighting_std': shift_std, 'input_std': input_std,
          'ratio': shift_std / input_std if input_std else float('nan')}


def real_batch(config, size: int):
  """(images the model sees [B, S, S, 3], labels): the first `size` of the eval split,
  centre-cropped, minus the mean image, times input.scale."""
  import jax.numpy as jnp
  import numpy as np

  from alexnet_jax.data import augment, pipeline, statistics
  config = config.copy_and_resolve_references()
  config.eval_batch_size = size
  batch = next(iter(pipeline.create_eval_iterator(
      config, config.dataset.eval_split, local_batch_size=size)))
  mean = statistics.load_or_compute_mean_image(config)
  x = augment.eval_preprocess(jnp.asarray(batch['image']), crop_size=config.model.input_size,
                              mean=None if mean is None else jnp.asarray(mean), crops=1)
  return np.asarray(x * config.input.scale), np.asarray(batch['label'])


def _row(name: str, q: dict[str, float]) -> str:
  return f'| {name} | ' + ' | '.join(f'{q[k]:.4f}' for k in QUANTILE_NAMES) + ' |'


def report(config, config_arg: str, workdirs: list[str], batch: int) -> str:
  import jax
  import numpy as np

  from alexnet_jax.common import config_lib
  from alexnet_jax.model import nets
  from alexnet_jax.run import checkpoints
  from experiments.ablations_lib import portable_path
  spec = config_lib.validate(config)
  images, _ = real_batch(config, batch)
  init = nets.init_params(spec, seed=config.seed)
  states = [(f'init (seed {config.seed})', init)]
  for w in workdirs:
    params, step = checkpoints.load_params(w, init, which='latest')
    params = jax.tree.map(np.asarray, params)
    states.append((f'trained: `{portable_path(w)}` step {step}', params))
  k = 2 if spec.lrn in ('paper', 'none') else 1
  lines = [f'# Ablation base check: `{config_arg}`', '',
           f'One real batch: the first {len(images)} images of the '
           f'`{config.dataset.eval_split}` split of `{config.dataset.name}` '
           f'(variant `{config.dataset.get("shapes_variant", "easy")}`), centre crop minus the '
           f'mean image times input.scale = {config.input.scale:g}.', '',
           f'## LRN multiplier (k + alpha * sum a^2)^-beta, model.lrn = `{spec.lrn}`', '',
           f'With no activity it is k^-0.75 = {k ** -0.75:.4f}; a spread below that means the '
           'LRN normalises (large responses are damped more than small ones).', '',
           '| parameters, layer | ' + ' | '.join(QUANTILE_NAMES) + ' |',
           '|---|' + '---|' * len(QUANTILE_NAMES)]
  drops = []
  for label, params in states:
    q = lrn_multiplier_quantiles(spec, params, images)
    lines += [_row(f'{label}, {layer}', q[layer]) for layer in ('conv1', 'conv2')]
    drops.append((label, dropout_fractions(spec, params, images, seed=config.seed)))
  lines += ['', f'## Dropout: model.dropout_rate = {spec.dropout_rate:g}, scaling '
            f'`{spec.dropout_scaling}`', '',
            'Fraction of the fc6/fc7 units active (> 0) in training mode that the mask zeroes.',
            '', '| parameters | fc6 dropped | fc7 dropped |', '|---|---|---|']
  lines += [f'| {label} | {d["fc6"]:.3f} | {d["fc7"]:.3f} |' for label, d in drops]
  light = lighting_vs_input_std(config, images)
  lines += ['', '## PCA lighting', '',
            f'alpha ~ N(0, {light["pca_sigma"]:g}) per image; the shift eigvec @ (alpha * eigval)'
            f' x 255 x input.scale has std {light["lighting_std"]:.4g} per channel value, the '
            f'model\'s input std {light["input_std"]:.4g}: ratio {light["ratio"]:.3f} (both '
            'in the model\'s input units, so the lighting is at the input\'s scale).', '']
  return '\n'.join(lines)


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  from alexnet_jax.common import logs
  from experiments import ablations_lib
  logs.setup()
  try:
    config = ablations_lib.load_config(_CONFIG.value)
    text = report(config, ablations_lib.portable_config_arg(_CONFIG.value), _WORKDIRS.value,
                  _BATCH.value)
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(text)
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, 'w') as f:
      f.write(text)
  return 0


if __name__ == '__main__':
  app.run(main)
