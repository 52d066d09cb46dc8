r"""Evaluates a run's checkpoint: centre crop and the paper's 10 crops, top-1 and top-5.

  python -m alexnet_jax.evaluate --workdir=/tmp/alexnet
  python -m alexnet_jax.evaluate --workdir=DIR --checkpoint=best --crops=10 --split=validation
  python -m alexnet_jax.evaluate --workdir=DIR --folder=TESTDIR   # any labelled folder
  python -m alexnet_jax.evaluate --workdir=DIR --json=-          # the JSON on stdout

The model and preprocessing are rebuilt from the run's config.json and the mean from its
preprocessing.npz (so a copied workdir needs only the split's images); every example of
the split is counted exactly once (the last batch is padded and masked). --checkpoint=latest
(the default) is the final model; best is the step of best validation top-1, chosen on this
same split, so its number here is biased upwards. The table (it names the checkpoint and
step) is printed and the results are written as JSON to --json: a file, `-` for stdout
(the table then goes to stderr), by default DIR/eval_<split>_<checkpoint>.json. The workdir
may be local or on an object store (gs://...). A progress bar shows on a terminal.

--folder=TESTDIR scores every image under TESTDIR's class sub-folders instead of a split
(not with --split): TESTDIR/<class>/<image>, its immediate sub-folders being the classes,
named as the run's dataset names them (a folder run's class folders, CIFAR-10's 'airplane',
an ImageNet run's WordNet synsets such as n01440764). It may hold any subset of the run's
classes; each image's label is the run's index of its sub-folder's name, and it goes
through the run's validation preprocessing. A sub-folder that is not a class of the run,
images directly in TESTDIR (unlabelled photos are for `python -m alexnet_jax.predict`) and
a folder without images are usage errors; an image that cannot be decoded is skipped and
named (the counts leave it out). The JSON's 'split' is 'folder:<absolute TESTDIR>', with
'skipped' and 'skipped_files' added; by default it is written to
DIR/eval_folder_<TESTDIR's basename>_<checkpoint>.json.

Exit status (alexnet_jax/common/exits.py): 0 evaluated; 2 usage error (no such workdir,
no such checkpoint, unknown split or dataset missing, --split with --folder, a folder that
is not labelled by the run's classes); 5 no checkpoint of the run restores.
"""

from __future__ import annotations

import os
import re
import sys

from absl import app, flags

from alexnet_jax.common import exits, logs

_WORKDIR = flags.DEFINE_string('workdir', None, 'A training run\'s workdir.')
_CHECKPOINT = exits.define_checkpoint()
_CROPS = flags.DEFINE_list('crops', ['1', '10'], '1 (centre crop) and/or 10 (paper).')
_SPLIT = flags.DEFINE_string('split', None, 'Split to evaluate (default: the config\'s).')
_BATCH = flags.DEFINE_integer('batch_size', None, 'Global eval batch (default: config\'s).')
_FOLDER = flags.DEFINE_string('folder', None, 'Score the images in this folder\'s class '
                              'sub-folders (named as the run\'s classes) instead of a split.')
_JSON = flags.DEFINE_string('json', None, 'Where the results go as JSON: a file, or "-" for '
                            'stdout (default: WORKDIR/eval_<split>_<checkpoint>.json; with '
                            '--folder=F, WORKDIR/eval_folder_<basename of F>_<checkpoint>.json).')


def _default_json(r: dict, folder: str | None) -> str:
  """WORKDIR/eval_<split>_<checkpoint>.json, or eval_folder_<folder's basename>_... ; a
  TFDS slice's characters that a shell would trip on become '_' (train[90%:] ->
  train_90pct)."""
  name = r['split']
  if folder is not None:
    name = 'folder_' + os.path.basename(os.path.normpath(folder))
  name = re.sub(r'[^A-Za-z0-9_.-]+', '_', name.replace('%', 'pct')).strip('_')
  return os.path.join(r['workdir'], f'eval_{name}_{r["checkpoint"]}.json')


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required: the workdir of a training run')
  if not set(_CROPS.value) <= {'1', '10'}:
    raise app.UsageError(f'--crops={",".join(_CROPS.value)}: allowed values are 1 and 10')
  if _FOLDER.value is not None and _SPLIT.value is not None:
    raise app.UsageError(f'--folder={_FOLDER.value} and --split={_SPLIT.value}: give one of '
                         'them (--folder scores a labelled folder instead of a split)')
  crops = tuple(int(c) for c in _CROPS.value)
  logs.setup()
  from alexnet_jax.run import evaluate as evaluation  # after flags: keeps --help fast
  try:
    r = evaluation.evaluate_checkpoint(_WORKDIR.value, checkpoint=_CHECKPOINT.value,
                                       crops=crops, split=_SPLIT.value,
                                       batch_size=_BATCH.value, folder=_FOLDER.value)
  except Exception as e:
    return exits.user_fault(e)
  text = sys.stderr if _JSON.value == '-' else sys.stdout
  print(f'{r["checkpoint"]} checkpoint (step {r["step"]}) of {r["workdir"]}, split '
        f'{r["split"]}:', file=text)
  print(f'  {"crops":<8}{"top-1":>8}{"top-5":>8}{"error@1":>9}{"error@5":>9}{"images":>9}',
        file=text)
  for n in crops:
    m = r[f'crops_{n}']
    print(f'  {n:<8}{m["top1"]:>8.4f}{m["top5"]:>8.4f}{1 - m["top1"]:>9.4f}'
          f'{1 - m["top5"]:>9.4f}{int(m["count"]):>9}', file=text)
  if r.get('skipped'):
    more = r['skipped'] - 10
    print(f'  skipped {r["skipped"]} image(s) that could not be decoded: '
          f'{", ".join(r["skipped_files"][:10])}{f" and {more} more" if more > 0 else ""}',
          file=text)
  out = _JSON.value or _default_json(r, _FOLDER.value)
  status = exits.emit_json(r, out)
  if status == exits.OK and out != '-':
    print(f'written: {out}')
  return status


if __name__ == '__main__':
  exits.run(main)
