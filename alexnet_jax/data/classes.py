"""Class names of a run's dataset, without reading the data: ImageNet's from the shipped
table (`imagenet_classes.tsv` beside this file: index, WordNet synset, name, in the
sorted-synset order of TFDS's labels), CIFAR-10's from the table below, a folder dataset's
from its sub-folders, the built-in dataset's from its module, any other TFDS dataset's from
its registered builder's info."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import ml_collections
from absl import logging

from alexnet_jax.common.lazy_tf import tfds  # imported on first use
from alexnet_jax.data import sources

IMAGENET_CLASSES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                     'imagenet_classes.tsv')
IMAGENET_NAMES = ('imagenet2012', 'imagenet2012_subset', 'imagenet2012_real',
                  'imagenet_v2', 'imagenet2012_corrupted')
# TFDS `cifar10`'s label names in label order. Its builder reads them from the download
# (batches.meta.txt), so an unprepared builder's info has only '0'..'9': a run copied
# without its dataset still names its classes from here.
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                   'ship', 'truck')


@dataclasses.dataclass(frozen=True)
class ClassInfo:
  label: str          # the dataset's own label: a WordNet synset for ImageNet, a folder name
  name: str           # human-readable


@functools.cache
def imagenet_classes() -> tuple[ClassInfo, ...]:
  """The 1000 ILSVRC-2012 classes in label order: (synset, name) from the shipped table."""
  with open(IMAGENET_CLASSES_FILE, encoding='utf-8') as f:
    rows = [line.rstrip('\n').split('\t') for line in f if line.strip()]
  if rows and rows[0] == ['index', 'synset', 'name']:
    rows = rows[1:]
  out = []
  for i, (index, synset, name) in enumerate(rows):
    if int(index) != i:
      raise ValueError(f'{IMAGENET_CLASSES_FILE}: row {i} has index {index}')
    out.append(ClassInfo(synset, name))
  return tuple(out)


@functools.cache
def _synset_names() -> dict[str, str]:
  return {c.label: c.name for c in imagenet_classes()}


def _named(labels: Sequence[str]) -> tuple[ClassInfo, ...]:
  """Labels as ClassInfo: a WordNet synset gets its ImageNet name, anything else is its own
  name (underscores read as spaces)."""
  table = _synset_names()
  return tuple(ClassInfo(str(x), table.get(str(x), str(x).replace('_', ' '))) for x in labels)


def class_info(config: ml_collections.ConfigDict) -> tuple[ClassInfo, ...]:
  """The run's classes, in label order (see the module doc); 'class <i>' where the dataset
  says nothing (synthetic data, or a dataset that is not there to ask)."""
  n = int(config.model.num_classes)
  name = str(config.dataset.name)
  labels: Sequence[str] | None = None
  if name in IMAGENET_NAMES and n == 1000:
    return imagenet_classes()
  if name == 'cifar10' and n == len(CIFAR10_CLASSES):
    return _named(CIFAR10_CLASSES)
  try:
    if name == 'folder':
      labels = sources.folder_listing(config.dataset.folder, config.dataset.train_split).classes
    elif name == 'alexnet_shapes':
      from alexnet_jax.data.datasets import shapes  # imports TensorFlow: only when used
      labels = shapes.CLASS_NAMES[:n]
    elif name != sources.SYNTHETIC:
      # The registered builder's static info: nothing is read, prepared or built.
      labels = tfds.builder(name, data_dir=os.fspath(sources.data_dir(config))
                            ).info.features['label'].names
  except Exception as e:  # noqa: BLE001 - names are a nicety: never a reason to fail
    logging.warning('class names of dataset %r unavailable (%s): printing class indices',
                    name, ' '.join(str(e).split())[:200])
  if labels is not None and len(labels) != n:
    logging.warning('dataset %r has %d label names, the model %d classes: printing class '
                    'indices', name, len(labels), n)
    labels = None
  if labels is None:
    return tuple(ClassInfo(str(i), f'class {i}') for i in range(n))
  return _named(labels)
