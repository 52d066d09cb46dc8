"""Where the data comes from: directories, TFDS builders, folder listings, split sizes.

Sources (`config.dataset.name`):
- any prepared TFDS image-classification dataset in `data_dir(config)`; with
  `input.use_preresized` the dataset `preresized_name(config)` written by
  `alexnet_jax.prepare --preresized` is read instead (found by `dataset_dir`);
- 'alexnet_shapes', built offline on first use;
- 'folder': class sub-folders of images under `dataset.folder` (`folder_listing`);
- 'synthetic': no files; ILSVRC-2012-sized splits (SYNTHETIC_EXAMPLES) of pre-made random
  images (`input_pipeline` makes them).

Nothing is ever downloaded at run time: a TFDS dataset that is not prepared is refused with
`missing_message(config)`, which says what is missing and what to run (and which versions
are there when the one this TFDS reads is not). Every path is an `etils.epath.Path`, so
data_dir may be a gs:// bucket; a data_dir or folder that cannot be read or written (no
network or credentials, read-only while alexnet_shapes must be built there) raises
`DataDirError` naming it, never a traceback.
"""

from __future__ import annotations

import functools
import os
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import ml_collections
from etils import epath

from alexnet_jax.common.lazy_tf import tf, tfds  # imported on first use

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')
# A folder without split sub-folders: this fraction of each class (chosen by a hash of the
# file's relative path, so stable when files are added) is the validation split.
FOLDER_HOLDOUT_PERCENT = 10
FOLDER_EVAL_SPLITS = ('validation', 'val', 'test')
# dataset.name='synthetic': examples per split (ILSVRC-2012's sizes).
SYNTHETIC = 'synthetic'
SYNTHETIC_EXAMPLES = {'train': 1_281_167, 'validation': 50_000}
IMAGENET = 'imagenet2012'


class DataDirError(ValueError):
  """A data directory (or dataset folder) cannot be read, or written where it must be."""


def _io_error(what: str, path, e: BaseException) -> DataDirError:
  cause = ' '.join(str(e).split())[:400] or type(e).__name__
  if isinstance(e, OSError) and e.strerror:
    cause = f'{e.strerror}: {e.filename or path}'
  hint = ''
  if '://' in str(path):
    hint = (' On an object store check the bucket name, the credentials (gcloud auth '
            'application-default login, GOOGLE_APPLICATION_CREDENTIALS) and network access, '
            'or copy the data to a local directory.')
  return DataDirError(f'{what} {path} cannot be used: {cause}.{hint}')


# ------------------------------------------------------------------------------ directories


def data_dir(config: ml_collections.ConfigDict) -> epath.Path:
  """config.dataset.data_dir, or TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  if config.dataset.data_dir:
    return epath.Path(config.dataset.data_dir)
  return epath.Path(tfds.core.constants.DATA_DIR).expanduser()


def manual_dir(config: ml_collections.ConfigDict) -> epath.Path:
  """config.dataset.manual_dir, or TFDS's default <data_dir>/downloads/manual."""
  if config.dataset.manual_dir:
    return epath.Path(config.dataset.manual_dir)
  return data_dir(config) / 'downloads' / 'manual'


# The two archives the TFDS `imagenet2012` builder reads from its manual_dir
# (the test archive is optional and not used here).
MANUAL_FILES = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')


def check_manual_files(manual_dir: str | epath.PathLike) -> list[epath.Path]:
  """The ILSVRC-2012 archives missing from `manual_dir` (full paths; empty: all there)."""
  manual_dir = epath.Path(manual_dir)
  return [manual_dir / f for f in MANUAL_FILES if not (manual_dir / f).exists()]


# ------------------------------------------------------------------------------ folders


class FolderListing(NamedTuple):
  paths: tuple[str, ...]
  labels: tuple[int, ...]
  classes: tuple[str, ...]


def folder_listing(root: str | os.PathLike, split: str) -> FolderListing:
  """(paths, labels, class names) of a split of a folder of class sub-folders (see
  `_folder_listing`); a folder that cannot be read raises DataDirError."""
  try:
    return _folder_listing(root, split)
  except (FileNotFoundError, ValueError):
    raise
  except (OSError, tf.errors.OpError) as e:
    raise _io_error('dataset.folder', os.fspath(root), e) from None


@functools.lru_cache(maxsize=16)
def _folder_listing(root: str | os.PathLike, split: str) -> FolderListing:
  """(paths, labels, class names) of a split of a folder of class sub-folders, sorted: the
  same on every process. With `train`/`validation` sub-folders a split is its sub-folder;
  without, FOLDER_HOLDOUT_PERCENT of each class (by a hash of the file's relative path) is
  held out as every split named in FOLDER_EVAL_SPLITS, and the rest is any other split."""
  root = epath.Path(root)

  def classes_in(d):
    return sorted(p.name for p in d.iterdir() if p.is_dir())

  def images_in(d):
    return sorted(p.name for p in d.iterdir() if p.name.lower().endswith(IMAGE_EXTENSIONS))

  if not root.is_dir():
    raise FileNotFoundError(f"dataset.folder={os.fspath(root)!r} is not a directory "
                            "(dataset.name='folder' needs class sub-folders of images, "
                            "optionally under 'train'/'validation')")
  has_splits = (root / 'train').is_dir()
  if has_splits:
    classes = classes_in(root / 'train')
    split_dir = root / split
    if not split_dir.is_dir():
      raise FileNotFoundError(f'split {split!r}: no folder {split_dir}')
  else:
    classes = classes_in(root)
    split_dir = root
  if not classes:
    raise FileNotFoundError(f'no class sub-folders in {root}')
  paths, labels = [], []
  for label, name in enumerate(classes):
    class_dir = split_dir / name
    if has_splits and not class_dir.is_dir():
      continue
    for f in images_in(class_dir):
      if not has_splits:
        held_out = zlib.crc32(f'{name}/{f}'.encode()) % 100 < FOLDER_HOLDOUT_PERCENT
        if held_out != (split in FOLDER_EVAL_SPLITS):
          continue
      paths.append(os.fspath(class_dir / f))
      labels.append(label)
  if has_splits:
    unknown = set(classes_in(split_dir)) - set(classes)
    if unknown:
      raise ValueError(f'classes {sorted(unknown)} of {split_dir} are not in the train split')
  return FolderListing(tuple(paths), tuple(labels), tuple(classes))


class UnlabelledFolderError(ValueError):
  """A folder given to score a run holds no class sub-folders of images."""


def labelled_folder(root: str | os.PathLike, classes: Sequence[str]) -> FolderListing:
  """(paths, labels, `classes`) of every image in the class sub-folders of `root`, labelled
  by the index in `classes` (a run's label order, `data.classes`) of its sub-folder's name.

  Unlike `folder_listing`, the label order is not `root`'s own: `root` may hold any subset
  of `classes`, so a test folder is scored by the model that knows the classes, whatever
  the folder lacks. `root`'s immediate sub-folders are the classes (no train/validation
  level); each one's images are the files directly in it with an IMAGE_EXTENSIONS suffix.
  A sub-folder that is not one of `classes`, images lying in `root` itself (they carry no
  label) and a folder without any image raise UnlabelledFolderError (a ValueError: exit
  status USAGE), each naming what is wrong and what to do instead."""
  try:
    return _labelled_folder(epath.Path(root), tuple(classes))
  except (FileNotFoundError, ValueError):
    raise
  except (OSError, tf.errors.OpError) as e:
    raise _io_error('folder', os.fspath(root), e) from None


def _labelled_folder(root: epath.Path, classes: tuple[str, ...]) -> FolderListing:
  where = os.fspath(root)
  if not root.is_dir():
    raise FileNotFoundError(f'{where} is not a directory: pass a folder of class '
                            'sub-folders of images (DIR/<class>/<image>)')
  entries = sorted(root.iterdir(), key=lambda p: p.name)
  folders = [p for p in entries if p.is_dir()]
  loose = [p.name for p in entries
           if not p.is_dir() and p.name.lower().endswith(IMAGE_EXTENSIONS)]
  if loose:
    raise UnlabelledFolderError(
        f'{where} holds {len(loose)} image(s) directly ({", ".join(loose[:3])}'
        f'{", ..." if len(loose) > 3 else ""}), outside any class sub-folder, so they have '
        'no label: put each image in a sub-folder named after its class (DIR/<class>/<image>), '
        'or classify unlabelled photos with python -m alexnet_jax.predict --workdir=WORKDIR '
        f'{where}')
  index = {name: i for i, name in enumerate(classes)}
  unknown = [p.name for p in folders if p.name not in index]
  if unknown:
    shown = ', '.join(classes[:8]) + (f', ... ({len(classes)} in all)' if len(classes) > 8
                                      else '')
    hint = ''
    splits = sorted(set(unknown) & {'train', *FOLDER_EVAL_SPLITS})
    if splits:
      hint = (' A split folder is not a class: pass the split itself, e.g. '
              f'--folder={os.path.join(where, splits[-1])}.')
    raise UnlabelledFolderError(
        f'sub-folder(s) {", ".join(repr(u) for u in unknown[:5])}'
        f'{", ..." if len(unknown) > 5 else ""} of {where} are not classes of the run; '
        f'its classes are {shown}. Name each sub-folder exactly as one of them (an ImageNet '
        f'run: the WordNet synset, e.g. n01440764).{hint}')
  paths, labels = [], []
  for folder in folders:
    for f in sorted(p.name for p in folder.iterdir()
                    if p.name.lower().endswith(IMAGE_EXTENSIONS) and not p.is_dir()):
      paths.append(os.fspath(folder / f))
      labels.append(index[folder.name])
  if not paths:
    raise UnlabelledFolderError(
        f'no images in {where}' + (f' or its {len(folders)} class sub-folder(s)' if folders
                                   else ' (it has no class sub-folders)') +
        f': expected DIR/<class>/<image> with one of the suffixes {" ".join(IMAGE_EXTENSIONS)}')
  return FolderListing(tuple(paths), tuple(labels), classes)


# ------------------------------------------------------------------------------ TFDS


def preresized_name(config: ml_collections.ConfigDict) -> str:
  """The pre-resized copy of config.dataset.name that `prepare --preresized` writes."""
  return f'{config.dataset.name}_resized{config.input.resize_size}'


def dataset_name(config: ml_collections.ConfigDict) -> str:
  """The TFDS dataset training reads: the pre-resized copy with input.use_preresized."""
  return preresized_name(config) if config.input.use_preresized else config.dataset.name


def _version_key(v: str):
  return tuple(int(p) if p.isdigit() else -1 for p in v.split('.'))


def dataset_dir(ddir: str | os.PathLike, name: str) -> epath.Path | None:
  """<ddir>/<name>/<version> of the newest version holding a dataset_info.json, or None.

  How a dataset TFDS does not know by name (the pre-resized copy, any dataset written with
  `tfds.dataset_builders.store_as_tfds_dataset`) is found."""
  path = epath.Path(ddir) / name
  if not path.is_dir():
    return None
  versions = sorted((p.name for p in path.iterdir() if (p / 'dataset_info.json').exists()),
                    key=_version_key)
  return path / versions[-1] if versions else None


def preresized_dir(config: ml_collections.ConfigDict) -> epath.Path | None:
  """Where the pre-resized copy of the dataset is (None: not written yet)."""
  return dataset_dir(data_dir(config), preresized_name(config))


class _NotPrepared(Exception):
  pass


@functools.lru_cache(maxsize=16)
def _tfds_builder(name: str, ddir: epath.Path, manual: str | None,
                  shapes: tuple[int, int, int, str]):
  """The builder of the prepared dataset `name`; raises _NotPrepared (not cached)."""
  if name == 'alexnet_shapes':
    from alexnet_jax.data.datasets import shapes as shapes_lib  # imports TensorFlow: when used
    size, train, validation, variant = shapes
    builder = shapes_lib.builder(ddir, image_size=size, train_size=train,
                                 validation_size=validation, variant=variant)
    if not builder.is_prepared():
      try:
        builder.download_and_prepare()
      except (OSError, tf.errors.OpError) as e:
        raise DataDirError(
            f'the built-in dataset alexnet_shapes is built in data_dir on first use, and '
            f'{_io_error("data_dir", ddir, e).args[0]} Pass a writable '
            '--config.dataset.data_dir, or build it once where data_dir is writable and '
            'copy it.') from None
    return builder
  try:
    builder = tfds.builder(name, data_dir=ddir)
  except tfds.core.registered.DatasetNotFoundError:
    # Unregistered names (the pre-resized copy) are read from their files.
    path = dataset_dir(ddir, name)
    if path is None:
      raise _NotPrepared() from None
    return tfds.builder_from_directory(path)
  if not builder.is_prepared():
    if name == IMAGENET and manual and epath.Path(manual).is_dir():
      # Building from the manual archives needs no network: allowed, if slow (hours).
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual))
    else:
      raise _NotPrepared()
  return builder


def builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder of the dataset training reads (`dataset_name`), prepared.

  'alexnet_shapes' is built here on first use; ImageNet is built from explicitly given
  archives (dataset.manual_dir), which takes hours. Anything else that is not prepared
  raises FileNotFoundError(missing_message(config)).
  """
  d = config.dataset
  try:
    return _tfds_builder(dataset_name(config), data_dir(config), d.manual_dir,
                         (d.shapes_image_size, d.shapes_train_size, d.shapes_validation_size,
                          d.shapes_variant))
  except _NotPrepared:
    raise FileNotFoundError(_not_prepared_message(config)) from None
  except (DataDirError, FileNotFoundError):
    raise
  except (OSError, tf.errors.OpError) as e:
    raise _io_error('data_dir', data_dir(config), e) from None


def without_preresized(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` that reads the original dataset, not its pre-resized copy."""
  original = config.copy_and_resolve_references()
  original.input.use_preresized = False
  return original


def is_prepared(config: ml_collections.ConfigDict) -> bool:
  """Whether the dataset training reads (the pre-resized copy if asked for) is there, by the
  same rules as `builder` but building nothing ('alexnet_shapes', 'folder' and 'synthetic'
  need no preparing)."""
  name, ddir = dataset_name(config), data_dir(config)
  if name in ('alexnet_shapes', 'folder', SYNTHETIC):
    return True
  try:
    return tfds.builder(name, data_dir=ddir).is_prepared()
  except tfds.core.registered.DatasetNotFoundError:
    return dataset_dir(ddir, name) is not None
  except Exception:  # an unbuildable name is simply "not prepared"
    return False


def prepare_command(config: ml_collections.ConfigDict) -> str:
  """The `alexnet_jax.prepare` command line that makes the dataset training reads."""
  ddir = data_dir(config)
  command = 'python -m alexnet_jax.prepare --config=configs/paper.py '
  if config.dataset.name == IMAGENET:
    command += f'--config.dataset.data_dir={ddir} --config.dataset.manual_dir={manual_dir(config)}'
  else:
    command += f'--config.dataset.name={config.dataset.name} --config.dataset.data_dir={ddir}'
  return command + (' --preresized' if config.input.use_preresized else '')


def download_command(name: str, ddir: str | os.PathLike) -> str:
  """The shell line that downloads and prepares the TFDS dataset `name` in `ddir`: TFDS's
  own Python call, since `tfds build` fails to start without apache_beam (an optional
  dependency) in tensorflow-datasets 4.9."""
  return (f'python -c "import tensorflow_datasets as tfds; tfds.builder({name!r}, '
          f'data_dir={os.fspath(ddir)!r}).download_and_prepare()"')


def missing_message(config: ml_collections.ConfigDict) -> str:
  """'' when the dataset training reads is ready; otherwise what is missing, where it goes
  and what to run."""
  return '' if is_prepared(config) else _not_prepared_message(config)


def _other_versions(name: str, ddir: epath.Path) -> str:
  """' It holds version(s) X, but this TFDS reads Y: ...' when <ddir>/<name> has prepared
  versions other than the one `tfds.builder` reads; '' otherwise."""
  try:
    wanted = str(tfds.builder(name, data_dir=ddir).version)
    root = ddir / name
    found = sorted((p.name for p in root.iterdir()
                    if p.name != wanted and (p / 'dataset_info.json').exists()),
                   key=_version_key) if root.is_dir() else []
  except Exception:  # noqa: BLE001 - only a hint
    return ''
  if not found:
    return ''
  return (f' {ddir / name} holds version(s) {", ".join(found)} (prepared by another '
          f'tensorflow-datasets), but tensorflow-datasets {tfds.__version__} reads version '
          f'{wanted}: prepare {wanted} next to it, or install the tensorflow-datasets that '
          'wrote it.')


def _not_prepared_message(config: ml_collections.ConfigDict) -> str:
  name, ddir = dataset_name(config), data_dir(config)
  if '://' in str(ddir):
    try:
      ddir.exists()
    except Exception as e:  # noqa: BLE001 - an unreachable bucket is not "not prepared"
      return _io_error('data_dir', ddir, e).args[0]
  head = (f'TFDS dataset {name!r} is not prepared in data_dir {ddir} and is never downloaded '
          'at run time.' + _other_versions(name, ddir))
  if config.dataset.name == IMAGENET:
    mdir = manual_dir(config)
    command = f'  {prepare_command(config)}'
    if config.input.use_preresized and is_prepared(without_preresized(config)):
      return f'{head} {IMAGENET!r} is prepared; write its pre-resized copy with:\n{command}'
    missing = check_manual_files(mdir)
    if not missing:
      return f'{head} The archives are in {mdir}. Run:\n{command}'
    return '\n'.join([
        head,
        f'{len(missing)} of the {len(MANUAL_FILES)} ILSVRC-2012 archives TFDS '
        'builds it from are missing:',
        *[f'  missing: {p}' for p in missing],
        'Download them from https://image-net.org/download-images (registration needed),',
        f'put them in {mdir}/ (or pass --config.dataset.manual_dir=DIR) and run:',
        command,
    ])
  if config.input.use_preresized:
    how = (f'Write the pre-resized copy with: {prepare_command(config)}, or set '
           '--config.input.use_preresized=False')
  else:
    how = (f'Prepare it on a machine with internet access: {download_command(name, ddir)} '
           f'(or tfds build {name} --data_dir={ddir}, which needs apache_beam with '
           'tensorflow-datasets 4.9), then copy the folder here; or use '
           "--config.dataset.name=alexnet_shapes (built-in, offline) or "
           "--config.dataset.name=folder --config.dataset.folder=DIR")
  return f'{head} {how}'


# ------------------------------------------------------------------------------ sizes


def _synthetic_split_size(split: str) -> int:
  base = split.split('[')[0]
  if base not in SYNTHETIC_EXAMPLES:
    raise ValueError(f'dataset.name={SYNTHETIC!r} has splits {sorted(SYNTHETIC_EXAMPLES)}; '
                     f'got {split!r}')
  return SYNTHETIC_EXAMPLES[base]


def num_examples(config: ml_collections.ConfigDict, split: str) -> int:
  """Examples in `split` over all processes (before any corrupt one is skipped)."""
  if config.dataset.name == SYNTHETIC:
    return _synthetic_split_size(split)
  if config.dataset.name == 'folder':
    return len(folder_listing(config.dataset.folder, split).paths)
  return builder(config).info.splits[split].num_examples


def num_classes(config: ml_collections.ConfigDict) -> int:
  if config.dataset.name == SYNTHETIC:
    return int(config.model.num_classes)
  if config.dataset.name == 'folder':
    return len(folder_listing(config.dataset.folder, config.dataset.train_split).classes)
  return builder(config).info.features['label'].num_classes
