"""Input-pipeline throughput on real ImageNet photos, per host core: the library of
`python -m benchmarks.input` (no flags here; settings: benchmarks/configs/input.py).

Three ways to feed a training step from the same photos, in the same run:

  (a) project     this project's training pipeline (`data.pipeline.train_dataset`,
                  tf.data over a TFDS dataset of the photos): JPEG decode of the centre
                  square, resize to 256x256 uint8. The random 224 crop, flip, PCA
                  lighting and mean subtraction run later inside the jitted step
                  (`augment.device_preprocess`), not on the host.
  (b) pytorch     what PyTorch users usually do (torchvision's ImageFolder + Resize(256) +
                  RandomCrop(224) + RandomHorizontalFlip + ToTensor + Normalize in a
                  DataLoader with one worker process per core): PIL decode, bilinear
                  shorter-side resize to 256, random 224 crop, flip, float32 CHW,
                  normalise, batch; a multiprocessing Pool of os.cpu_count() processes,
                  reimplemented with PIL/NumPy (no torch import).
  (c) preresized  (a) reading the paper's 256x256 copy (`alexnet_jax.prepare --preresized`).

The photos default to ../shared/data/imagenet-sample next to the repository root
(config.images_dir).

The photos (~200, 70-2400 px a side) are written once to a TFDS dataset (and its
pre-resized copy, by the same code as `prepare`) in a scratch data_dir and read
endlessly (epochs), so the measurement is decode-bound, not disk-bound: the files
are in the page cache for all three.

Per core, honestly: every pipeline may use all the cores of this process
(`os.sched_getaffinity`): tf.data's AUTOTUNE threads, or a Pool of that many
processes. The CPU time each one really spends is measured (this process's CPU for
(a)/(c), the workers' CPU per batch plus this process's for (b)), and img/s/core
is images per CPU-second: the same as img/s / cores when the cores are saturated,
and still right on a machine shared with other jobs (the wall-clock img/s / cores
and the busy cores are reported next to it). (b) is flattered: its batches are not
shipped back to the main process (DataLoader would, through shared memory).

`run(config)` returns the JSON report (fields: docs/benchmarks.md); the goals these
ratios are held to are in benchmarks/logs/input.md, not in the report.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

import ml_collections
import numpy as np
from PIL import Image

from benchmarks import machine

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DATASET = 'imagenet_sample_bench'
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # torchvision's constants
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
PIPELINES = ('project', 'pytorch', 'preresized')


def images_dir(config: ml_collections.ConfigDict) -> str:
  """config.images_dir, or the sample photos: ../shared/data/imagenet-sample from the repo root."""
  if config.images_dir:
    return config.images_dir
  return os.path.normpath(os.path.join(REPO_ROOT, '..', 'shared', 'data', 'imagenet-sample'))


def list_photos(folder: str) -> list[str]:
  exts = ('.jpeg', '.jpg')
  paths = (sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(exts)) if os.path.isdir(folder) else [])
  if not paths:
    raise FileNotFoundError(f'no JPEG photos in {folder}: set --config.images_dir to a folder '
                            'of JPEG photos (file names <wnid>_<anything>.JPEG)')
  return paths


# ------------------------------------------------------------------- (b) PyTorch-style


def _pil_train_transform(path: str, rng: random.Random, resize: int, crop: int) -> np.ndarray:
  """torchvision Resize(256) + RandomCrop(224) + RandomHorizontalFlip + ToTensor + Normalize."""
  with Image.open(path) as im:
    im = im.convert('RGB')
    w, h = im.size
    if w <= h:  # torchvision truncates the long side: int(size * long / short)
      nw, nh = resize, int(resize * h / w)
    else:
      nw, nh = int(resize * w / h), resize
    im = im.resize((nw, nh), Image.BILINEAR)
    top, left = rng.randint(0, nh - crop), rng.randint(0, nw - crop)
    im = im.crop((left, top, left + crop, top + crop))
    if rng.random() < 0.5:
      im = im.transpose(Image.FLIP_LEFT_RIGHT)
    x = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
  return (x - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]


def _pytorch_style_batch(task: tuple[Sequence[str], int, int, int]) -> tuple[int, float]:
  """One DataLoader worker batch: (images, worker CPU seconds)."""
  paths, seed, resize, crop = task
  cpu = time.process_time()
  rng = random.Random(seed)
  batch = np.stack([_pil_train_transform(p, rng, resize, crop) for p in paths])
  return len(batch), time.process_time() - cpu


def _bench_pytorch_style(photos: Sequence[str], *, batch_size: int, processes: int,
                         warmup_s: float, seconds: float, resize: int, crop: int) -> dict:
  rng = random.Random(0)

  def batches(pool) -> Iterator[tuple[int, float]]:
    # Like DataLoader: batches come back in order, prefetch_factor=2 per worker.
    in_flight, k = [], 0
    while True:
      while len(in_flight) < 2 * processes:
        paths = [rng.choice(photos) for _ in range(batch_size)]
        in_flight.append(pool.apply_async(_pytorch_style_batch, ((paths, k, resize, crop),)))
        k += 1
      yield in_flight.pop(0).get()

  # 'spawn': workers must not inherit TensorFlow's threads from the parent.
  with multiprocessing.get_context('spawn').Pool(processes) as pool:
    return _measure(batches(pool), warmup_s=warmup_s, seconds=seconds, own_cpu=False)


# ----------------------------------------------------------------- (a), (c) this project


def _measure(results: Iterator, *, warmup_s: float, seconds: float, own_cpu: bool) -> dict:
  """Counts images over `seconds` after `warmup_s`; CPU from this process or the workers."""
  start = time.time()
  for _ in results:
    if time.time() - start >= warmup_s:
      break
  images, worker_cpu = 0, 0.0
  t0, cpu0 = time.time(), time.process_time()
  for item in results:
    if own_cpu:
      images += len(item['label'])
    else:
      n, cpu = item
      images, worker_cpu = images + n, worker_cpu + cpu
    if time.time() - t0 >= seconds:
      break
  wall = time.time() - t0
  cpu = time.process_time() - cpu0 + worker_cpu
  return {'images': images, 'wall_s': wall, 'cpu_s': cpu}


def _build_datasets(photos: Sequence[str], data_dir: str, resize_size: int,
                    log: Callable[[str], None]):
  """The photos as a TFDS dataset `imagenet_sample_bench` and its pre-resized copy."""
  from alexnet_jax.common import lazy_tf
  from alexnet_jax.data import prepare as imagenet
  from alexnet_jax.data import sources

  tf, tfds = lazy_tf.tf.load(), lazy_tf.tfds.load()

  wnids = sorted({os.path.basename(p).split('_', 1)[0] for p in photos})
  names = [os.path.basename(p) for p in photos]
  labels = [wnids.index(n.split('_', 1)[0]) for n in names]
  features = tfds.features.FeaturesDict({
      'image': tfds.features.Image(encoding_format='jpeg'),
      'label': tfds.features.ClassLabel(names=wnids),
      'file_name': tfds.features.Text(),
  })
  ds = tf.data.Dataset.from_tensor_slices({
      'image': [open(p, 'rb').read() for p in photos],
      'label': labels, 'file_name': names})
  if sources.dataset_dir(data_dir, BENCH_DATASET) is None:
    tfds.dataset_builders.store_as_tfds_dataset(
        name=BENCH_DATASET, version='1.0.0', features=features,
        split_datasets={'train': ds}, data_dir=data_dir)
  config = bench_config(data_dir, resize_size)
  imagenet.write_preresized(config, log=log)
  return config


def bench_config(data_dir: str, resize_size: int, resize_method: str = 'area'):
  from alexnet_jax.common import config_lib
  c = config_lib.base()
  c.dataset.name = BENCH_DATASET
  c.dataset.data_dir = data_dir
  c.input.resize_size = resize_size
  c.input.resize_method = resize_method
  return c


def _bench_project(config, *, batch_size: int, warmup_s: float, seconds: float,
                   preresized: bool) -> dict:
  from alexnet_jax.data import pipeline as input_pipeline
  config = config.copy_and_resolve_references()
  config.input.use_preresized = preresized
  it = input_pipeline.create_train_iterator(config, local_batch_size=batch_size)
  try:
    out = _measure(it, warmup_s=warmup_s, seconds=seconds, own_cpu=True)
  finally:
    it.close()
  return out


# --------------------------------------------------------------------------------- main


def ratios(rows: Sequence[dict], key: str) -> dict[str, float]:
  """{'project/pytorch': ..., 'preresized/pytorch': ...} of rows[...][key]."""
  by_name = {r['name']: r for r in rows}
  return {f'{a}/pytorch': by_name[a][key] / by_name['pytorch'][key]
          for a in ('project', 'preresized')}


def row(name: str, description: str, measured: dict, cores: int) -> dict:
  """One pipeline's report row from its measurement {'images', 'wall_s', 'cpu_s'}."""
  rate = measured['images'] / measured['wall_s']
  return {
      'name': name, 'description': description, 'images': measured['images'],
      'wall_s': round(measured['wall_s'], 3), 'cpu_s': round(measured['cpu_s'], 3),
      'images_per_s': rate,
      # Per core = images per CPU-second: equal to img/s / cores when the cores are
      # saturated, and unaffected by other jobs sharing the machine.
      'images_per_s_per_core': measured['images'] / max(measured['cpu_s'], 1e-9),
      'images_per_s_per_core_wall': rate / cores,
      'busy_cores': measured['cpu_s'] / measured['wall_s'],
  }


def run(config: ml_collections.ConfigDict, *, command: str = '',
        log: Callable[[str], None] = print) -> dict:
  """Runs (b), (a), (c) in turn on the same photos; returns the JSON-able report."""
  folder = images_dir(config)
  photos = list_photos(folder)
  cores = machine.host_cores()
  seconds, warmup_s, batch_size = config.seconds, config.warmup_seconds, config.batch_size
  resize_size, resize_method = config.resize_size, config.resize_method
  scratch = config.work_dir or tempfile.mkdtemp(prefix='alexnet_bench_input_')
  cpu = machine.cpu_info()
  try:
    log(f"{len(photos)} photos from {folder}; {cores} cores ({cpu['model']}; "
        f"{' '.join(cpu['flags'])})")
    # (b) first: its spawned workers start before TensorFlow's thread pools exist.
    measured = {}
    log('(b) pytorch-style PIL + Pool ...')
    measured['pytorch'] = _bench_pytorch_style(
        photos, batch_size=batch_size, processes=cores, warmup_s=warmup_s, seconds=seconds,
        resize=resize_size, crop=config.crop_size)
    log('building the TFDS datasets of the photos (original + pre-resized) ...')
    pipeline_config = _build_datasets(photos, os.path.join(scratch, 'tfds'), resize_size,
                                      log=lambda m: None)
    # (a) shrinks with the chosen filter; (c) needs no shrink (256x256 stored).
    pipeline_config.input.resize_method = resize_method
    log(f'(a) project pipeline (input.resize_method={resize_method!r}) ...')
    measured['project'] = _bench_project(pipeline_config, batch_size=batch_size,
                                         warmup_s=warmup_s, seconds=seconds, preresized=False)
    log('(c) project pipeline on the pre-resized copy ...')
    measured['preresized'] = _bench_project(pipeline_config, batch_size=batch_size,
                                            warmup_s=warmup_s, seconds=seconds,
                                            preresized=True)
  finally:
    if not config.work_dir:
      shutil.rmtree(scratch, ignore_errors=True)

  descriptions = {
      'project': 'this project: tf.data decode centre square + resize to 256 (uint8); '
                 'crop/flip/lighting/mean on the device',
      'pytorch': 'PyTorch-style: PIL decode, resize 256, random crop 224, flip, float, '
                 f'normalise; Pool({cores}) processes',
      'preresized': 'this project on the pre-resized 256x256 JPEG copy',
  }
  rows = [row(name, descriptions[name], measured[name], cores) for name in PIPELINES]
  m = machine.describe()   # after the measurements: starts the JAX backend
  log(machine.format_machine(m))
  return {
      'benchmark': 'input', 'command': command, 'config': config.to_dict(), 'machine': m,
      'images_dir': folder, 'num_photos': len(photos),
      'cores': cores, 'cpu_model': cpu['model'], 'batch_size': batch_size,
      'resize_method': resize_method,
      'seconds': seconds, 'warmup_seconds': warmup_s, 'resize_size': resize_size,
      'load_average': os.getloadavg(),
      'rows': rows, 'ratios': ratios(rows, 'images_per_s_per_core'),
      'ratios_wall': ratios(rows, 'images_per_s'),
  }


def format_table(report: dict) -> str:
  lines = [
      f"input pipeline, {report['num_photos']} real photos, {report['cores']} cores "
      f"({report['cpu_model']}), batch {report['batch_size']}, {report['seconds']:.0f}s timed, "
      f"load average {report['load_average'][0]:.1f}",
      f"{'pipeline':<12} {'img/s':>8} {'busy cores':>11} {'img/s/core':>11} "
      f"{'img/s/core (wall)':>18}",
  ]
  for r in report['rows']:
    lines.append(f"{r['name']:<12} {r['images_per_s']:8.1f} {r['busy_cores']:11.2f} "
                 f"{r['images_per_s_per_core']:11.1f} {r['images_per_s_per_core_wall']:18.1f}")
  lines.append('img/s/core = images per CPU-second (= img/s / cores on saturated cores); '
               '(wall) = img/s / all cores')
  for k, v in report['ratios'].items():
    lines.append(f"{k:<20} {v:6.2f}x per core  ({report['ratios_wall'][k]:.2f}x wall)")
  return '\n'.join(lines)


def write_json(report: dict, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(report, f, indent=2)
