"""A run's directory: the one place that names its files, and the one `load_run`.

  config.json          the run's full config (every command rebuilds the model from it)
  preprocessing.npz    what its preprocessing used: the mean it subtracts ('mean', absent
                       for input.mean='none') and the PCA lighting's 'pca_eigval' and
                       'pca_eigvec' (absent with the lighting off); written by training at
                       its start, so evaluate, predict, figures and weights export work on a
                       copy of the workdir without the dataset's statistics cache
  metrics.jsonl        one JSON object per logged point (train running means, evals)
  checkpoints/<step>/  the last train states (Orbax; run/checkpoints.py)
  best/<step>/         the parameters of the best validation top-1 so far
  damaged_checkpoints/ steps that failed to restore, set aside on resume
  .lock                held by the live training run (run/lock.py)

`--checkpoint=latest` (the default everywhere) is the final model, checkpoints/; `best` is
best/, chosen by top-1 on the same validation split `evaluate` reports, so its number there
is biased upwards. Whatever is read says which checkpoint and step it was.

The names and small files need no JAX: `load_run` imports the model side when called, so
the commands that only read metrics (figures curves, the ablation reports) stay quick.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
from typing import TYPE_CHECKING, Any

import ml_collections
import numpy as np
from absl import logging
from etils import epath

from alexnet_jax.common import config_lib
from alexnet_jax.run import lock as lock_lib

if TYPE_CHECKING:
  import jax
  from jax.sharding import Mesh

  from alexnet_jax.model import nets, steps

CONFIG = 'config.json'
PREPROCESSING = 'preprocessing.npz'
METRICS = 'metrics.jsonl'
CHECKPOINTS = 'checkpoints'          # the folder names checkpoints.Checkpointer writes
BEST = 'best'
DAMAGED = 'damaged_checkpoints'
LOCK = lock_lib.LOCK_NAME

CHECKPOINT_CHOICES = ('latest', 'best')
DEFAULT_CHECKPOINT = 'latest'
CHECKPOINT_HELP = ('latest: the final model (checkpoints/); best: the best validation top-1 '
                   '(best/; chosen on the split evaluate reports, so that number is biased).')
# What a run's workdir holds (an import refuses to write over these).
RUN_ENTRIES = (CONFIG, PREPROCESSING, METRICS, CHECKPOINTS, BEST, DAMAGED)


def path(workdir: str, name: str) -> epath.Path:
  """WORKDIR/name (local or gs://)."""
  return epath.Path(workdir) / name


def metrics_path(workdir: str) -> str:
  """The metrics.jsonl of a workdir (a path to the file itself is accepted too)."""
  return workdir if os.path.isfile(workdir) else os.path.join(workdir, METRICS)


def is_run(folder: str) -> bool:
  """Whether `folder` holds a run's metrics (what figures curves and the sweeps look for)."""
  return os.path.isfile(os.path.join(folder, METRICS))


# ------------------------------------------------------------------------------ config


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  root = epath.Path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  (root / CONFIG).write_text(config.to_json_best_effort(indent=2))


def read_config(workdir: str) -> dict:
  """config.json as written (a dict); FileNotFoundError when there is none."""
  return json.loads(path(workdir, CONFIG).read_text())


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config.json a training run wrote into its workdir (local or gs://), over
  config_lib.base(): fields added since the run was written take their defaults."""
  try:
    config = config_lib.base()
    config.update(read_config(workdir))
    return config
  except FileNotFoundError:
    raise FileNotFoundError(f'{workdir}/{CONFIG} not found: --workdir must be a training '
                            "run's workdir") from None


# ------------------------------------------------------------------------------ preprocessing


def write_preprocessing(workdir: str, mean: np.ndarray | None, pca: Any = None) -> None:
  """preprocessing.npz: the mean the run subtracts and the PCA lighting's eigval/eigvec
  (`statistics.RgbPca`, or None), written atomically (a reader never sees half a file), and
  not at all when the file already holds these values (a resumed run). Call it on the chief
  process only. Raises lock.WorkdirError (exit status WORKDIR) when it cannot be written."""
  arrays = {}
  if mean is not None:
    arrays['mean'] = np.asarray(mean, np.float32)
  if pca is not None:
    arrays['pca_eigval'] = np.asarray(pca.eigval, np.float32)
    arrays['pca_eigvec'] = np.asarray(pca.eigvec, np.float32)
  old = read_preprocessing(workdir)
  if old is not None and sorted(old) == sorted(arrays) and all(
      np.array_equal(old[k], v) for k, v in arrays.items()):
    return
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  target = path(workdir, PREPROCESSING)
  tmp = target.with_name(f'{PREPROCESSING}.tmp{os.getpid()}')
  try:
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(target)
  except OSError as e:
    raise lock_lib.WorkdirError(f'cannot write {target}: {e.strerror or e}') from e


def read_preprocessing(workdir: str) -> dict[str, np.ndarray] | None:
  """preprocessing.npz's arrays, or None for a workdir written before it existed."""
  target = path(workdir, PREPROCESSING)
  if not target.exists():
    return None
  with np.load(io.BytesIO(target.read_bytes())) as data:
    return {k: data[k] for k in data.files}


def run_mean(workdir: str, config: ml_collections.ConfigDict) -> np.ndarray | None:
  """The mean the run's preprocessing subtracts: from its preprocessing.npz; for an older
  workdir without one, from the config or the dataset's statistics cache (logged, since
  that cache lives with the dataset, under data_dir)."""
  saved = read_preprocessing(workdir)
  if saved is not None:
    return saved.get('mean')
  from alexnet_jax.data import statistics
  if config.input.mean in ('image', 'channel'):
    logging.info('%s has no %s (written before it existed): the mean image comes from the '
                 "dataset's statistics cache under data_dir.", workdir, PREPROCESSING)
  return statistics.load_or_compute_mean_image(config)


# ------------------------------------------------------------------------------ the run


@dataclasses.dataclass
class Run:
  """A trained run loaded for evaluation or inference: its config (batch sizes set to the
  requested batch), model, mesh and the parameters of one checkpoint."""
  workdir: str
  config: ml_collections.ConfigDict
  spec: nets.ModelSpec
  mesh: Mesh
  built: steps.Steps
  params: Any
  step: int
  checkpoint: str               # 'latest' | 'best'
  batch_size: int

  @functools.cached_property
  def mean(self) -> jax.Array:
    """The mean its preprocessing subtracts, on every device (read on first use: kernels
    and weight export never need it)."""
    return self.built.device_mean(run_mean(self.workdir, self.config))

  def put(self, images: np.ndarray) -> jax.Array:
    """A host batch of uint8 images -> one array split over the mesh's 'data' axis."""
    import jax
    return jax.device_put(images, self.built.batch)

  def describe(self) -> str:
    """'latest checkpoint (step 120) of DIR': what every command says it read."""
    return f'{self.checkpoint} checkpoint (step {self.step}) of {self.workdir}'


def batch_size_for(requested: int, mesh: Mesh) -> int:
  """`requested` rounded up to a multiple of the mesh's data axis."""
  n = int(requested)
  if n < 1:
    raise ValueError(f'batch size {n}: expected a positive int')
  data = int(mesh.shape['data'])
  return -(-n // data) * data


def check_checkpoint(checkpoint: str) -> None:
  if checkpoint not in CHECKPOINT_CHOICES:
    raise ValueError(f'checkpoint={checkpoint!r}: expected one of '
                     f'{", ".join(CHECKPOINT_CHOICES)}')


def load_run(workdir: str, *, checkpoint: str = DEFAULT_CHECKPOINT,
             batch_size: int | None = None, crops: int | None = None,
             one_device: bool = False) -> Run:
  """Loads one checkpoint ('latest' or 'best') of the run in `workdir` onto a mesh as the
  run's config.mesh over every local device (falling back like training does), or onto the
  first device alone (`one_device`: weights export).

  batch_size (default: the config's eval_batch_size) is rounded up to a multiple of the
  mesh's 'data' axis and becomes the config's batch sizes; crops sets input.eval_crops.
  """
  import jax

  from alexnet_jax.model import sharding, steps
  from alexnet_jax.run import checkpoints
  check_checkpoint(checkpoint)
  workdir = checkpoints.absolute(workdir)
  config = load_config(workdir)
  if crops is not None:
    config_lib.check_choice('input.eval_crops', crops)
    config.input.eval_crops = int(crops)
  for name, other in ((CHECKPOINTS, BEST), (BEST, CHECKPOINTS)):
    if (name == (BEST if checkpoint == 'best' else CHECKPOINTS)
        and not path(workdir, name).exists() and path(workdir, other).exists()):
      raise FileNotFoundError(f'{workdir} has no {name}/ (only {other}/): pass '
                              f'--checkpoint={"best" if other == BEST else "latest"}')
  if one_device:
    mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': 1, 'model': 1}),
                              devices=jax.devices()[:1])
  else:
    mesh = sharding.make_mesh(config.mesh)
  if batch_size is not None:
    config.batch_size = config.eval_batch_size = batch_size_for(batch_size, mesh)
  spec = config_lib.validate(config, mesh_shape=dict(mesh.shape),
                             process_count=jax.process_count())
  built = steps.build(config, spec, mesh)
  params, step = checkpoints.load_params(workdir, built.abstract_state().params,
                                         which=checkpoint)
  logging.info('read the %s checkpoint (step %d) of %s', checkpoint, step, workdir)
  return Run(workdir=workdir, config=config, spec=spec, mesh=mesh, built=built, params=params,
             step=int(step), checkpoint=checkpoint, batch_size=int(config.eval_batch_size))
