r"""Input-pipeline throughput on real ImageNet photos, per host core.

  python -m alexnet_jax.benchmark input [--images=/work/shared/data/imagenet-sample] \
      [--seconds=20] [--warmup_seconds=5] [--batch_size=64] [--json=PATH]

Three ways to feed a training step from the same photos, in the same run:

  (a) project     this project's training pipeline (`input_pipeline.train_dataset`,
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
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

DEFAULT_IMAGES = '/work/shared/data/imagenet-sample'
BENCH_DATASET = 'imagenet_sample_bench'
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # torchvision's constants
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
GOALS = {'project/pytorch': 2.0, 'preresized/pytorch': 5.0}


def host_cores() -> int:
  """Cores this process may run on (what tf.data and the Pool actually get)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def list_photos(images_dir: str) -> list[str]:
  exts = ('.jpeg', '.jpg')
  paths = sorted(os.path.join(images_dir, f) for f in os.listdir(images_dir)
                 if f.lower().endswith(exts))
  if not paths:
    raise FileNotFoundError(f'no JPEG photos in {images_dir}')
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
  import tensorflow as tf
  import tensorflow_datasets as tfds

  from alexnet_jax import imagenet, sources

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
  from alexnet_jax import config_lib
  c = config_lib.base()
  c.dataset.name = BENCH_DATASET
  c.dataset.data_dir = data_dir
  c.input.resize_size = resize_size
  c.input.resize_method = resize_method
  return c


def _bench_project(config, *, batch_size: int, warmup_s: float, seconds: float,
                   preresized: bool) -> dict:
  from alexnet_jax import input_pipeline
  config = config.copy_and_resolve_references()
  config.input.use_preresized = preresized
  it = input_pipeline.create_train_iterator(config, local_batch_size=batch_size)
  try:
    out = _measure(it, warmup_s=warmup_s, seconds=seconds, own_cpu=True)
  finally:
    it.close()
  return out


# --------------------------------------------------------------------------------- main


def run(images_dir: str = DEFAULT_IMAGES, *, seconds: float = 20.0, warmup_s: float = 5.0,
        batch_size: int = 64, resize_size: int = 256, crop_size: int = 224,
        resize_method: str = 'fast', work_dir: str | None = None,
        log: Callable[[str], None] = print) -> dict:
  """Runs (b), (a), (c) in turn on the same photos; returns the JSON-able report."""
  photos = list_photos(images_dir)
  cores = host_cores()
  scratch = work_dir or tempfile.mkdtemp(prefix='alexnet_bench_input_')
  try:
    log(f'{len(photos)} photos from {images_dir}; {cores} cores ({cpu_model()})')
    # (b) first: its spawned workers start before TensorFlow's thread pools exist.
    rows = {}
    log('(b) pytorch-style PIL + Pool ...')
    rows['pytorch'] = _bench_pytorch_style(
        photos, batch_size=batch_size, processes=cores, warmup_s=warmup_s, seconds=seconds,
        resize=resize_size, crop=crop_size)
    log('building the TFDS datasets of the photos (original + pre-resized) ...')
    config = _build_datasets(photos, os.path.join(scratch, 'tfds'), resize_size,
                             log=lambda m: None)
    # (a) shrinks with the chosen filter; (c) needs no shrink (256x256 stored).
    config.input.resize_method = resize_method
    log(f'(a) project pipeline (input.resize_method={resize_method!r}) ...')
    rows['project'] = _bench_project(config, batch_size=batch_size, warmup_s=warmup_s,
                                     seconds=seconds, preresized=False)
    log('(c) project pipeline on the pre-resized copy ...')
    rows['preresized'] = _bench_project(config, batch_size=batch_size, warmup_s=warmup_s,
                                        seconds=seconds, preresized=True)
  finally:
    if work_dir is None:
      shutil.rmtree(scratch, ignore_errors=True)

  descriptions = {
      'project': 'this project: tf.data decode centre square + resize to 256 (uint8); '
                 'crop/flip/lighting/mean on the device',
      'pytorch': 'PyTorch-style: PIL decode, resize 256, random crop 224, flip, float, '
                 f'normalise; Pool({cores}) processes',
      'preresized': 'this project on the pre-resized 256x256 JPEG copy',
  }
  out_rows = []
  for name in ('project', 'pytorch', 'preresized'):
    r = rows[name]
    rate = r['images'] / r['wall_s']
    out_rows.append({
        'name': name, 'description': descriptions[name], 'images': r['images'],
        'wall_s': round(r['wall_s'], 3), 'cpu_s': round(r['cpu_s'], 3),
        'images_per_s': rate,
        # Per core = images per CPU-second: equal to img/s / cores when the cores are
        # saturated, and unaffected by other jobs sharing the machine.
        'images_per_s_per_core': r['images'] / max(r['cpu_s'], 1e-9),
        'images_per_s_per_core_wall': rate / cores,
        'busy_cores': r['cpu_s'] / r['wall_s'],
    })
  by_name = {r['name']: r for r in out_rows}

  def ratios(key):
    return {f'{a}/pytorch': by_name[a][key] / by_name['pytorch'][key]
            for a in ('project', 'preresized')}

  ratios_cpu, ratios_wall = ratios('images_per_s_per_core'), ratios('images_per_s')
  return {
      'benchmark': 'input', 'images_dir': images_dir, 'num_photos': len(photos),
      'cores': cores, 'cpu_model': cpu_model(), 'batch_size': batch_size,
      'resize_method': resize_method,
      'seconds': seconds, 'warmup_seconds': warmup_s, 'resize_size': resize_size,
      'load_average': os.getloadavg(),
      'rows': out_rows, 'ratios': ratios_cpu, 'ratios_wall': ratios_wall,
      'goals': {k: {'target': v, 'met': ratios_cpu[k] >= v} for k, v in GOALS.items()},
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
    goal = report['goals'][k]
    lines.append(f"{k:<20} {v:6.2f}x per core  ({report['ratios_wall'][k]:.2f}x wall; "
                 f"goal >= {goal['target']:.0f}x: {'met' if goal['met'] else 'NOT met'})")
  return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
  import argparse
  p = argparse.ArgumentParser(prog='python -m alexnet_jax.benchmark input',
                              description=__doc__.split('\n\n')[0])
  p.add_argument('--images', default=DEFAULT_IMAGES, help='folder of JPEG photos')
  p.add_argument('--seconds', type=float, default=20.0, help='timed seconds per pipeline')
  p.add_argument('--warmup_seconds', type=float, default=5.0)
  p.add_argument('--batch_size', type=int, default=64)
  p.add_argument('--resize_size', type=int, default=256)
  p.add_argument('--resize_method', default='fast', choices=('fast', 'area', 'bilinear'),
                 help="(a)'s host shrink filter (config input.resize_method)")
  p.add_argument('--work_dir', default=None, help='keep the TFDS copies here (default: temp)')
  p.add_argument('--json', default=None, help='write the report here')
  args = p.parse_args(argv)
  report = run(args.images, seconds=args.seconds, warmup_s=args.warmup_seconds,
               batch_size=args.batch_size, resize_size=args.resize_size,
               resize_method=args.resize_method, work_dir=args.work_dir)
  print(format_table(report))
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, 'w') as f:
      json.dump(report, f, indent=2)
    print(f'wrote {args.json}')
  return report
