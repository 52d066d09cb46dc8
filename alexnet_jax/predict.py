r"""Classifies image files with a trained run: top-k classes with names and probabilities.

  python -m alexnet_jax.predict --workdir=/tmp/alexnet photo.jpg more_photos/
  python -m alexnet_jax.predict --workdir=DIR --crops=10 --top=3 --json=- IMAGE_OR_FOLDER...
  python -m alexnet_jax.predict --workdir=DIR --checkpoint=best photo.jpg

The run's own preprocessing is used (its config.json: resize, crop size, input scale; the
mean from its preprocessing.npz: no dataset is needed), on every local device, in fixed-
size batches (the last one padded) through one compiled program. A folder is searched
recursively for image files (.jpg .jpeg .png .bmp .gif .webp, any case); a file named
explicitly is tried whatever its extension. Grayscale, CMYK and PNGs named .JPEG are
converted to RGB like the training pipeline does; a file that cannot be decoded (not an
image, truncated) gets an `error:` line on stderr and the others are still classified.

Output: per image, its path and the top-k classes (probability, class index, synset or
label, name) on stdout; `--json=-` writes a JSON list instead ({'file', 'top': [{'index',
'label', 'name', 'prob'}]} or {'file', 'error'} per image), `--json=FILE` writes it to FILE
besides the text. A progress line goes to stderr for runs longer than a few seconds, after
a line naming the checkpoint (--checkpoint=latest, the default, or best) and its step.

Exit status (alexnet_jax/common/exits.py): 0 every image classified; 1 some file could not
be read or decoded (the others were classified); 2 usage error (no --workdir, no such
workdir or no checkpoint in it, no image found); 5 no checkpoint of the run restores.
"""

from __future__ import annotations

import sys

from absl import app, flags

from alexnet_jax.common import exits

_WORKDIR = flags.DEFINE_string('workdir', None, "A training run's workdir (config.json and "
                               'checkpoints).')
_CHECKPOINT = exits.define_checkpoint()
_CROPS = flags.DEFINE_enum('crops', '1', ['1', '10'], '1: centre crop; 10: the paper\'s '
                           '10 crops, softmax averaged.')
_TOP = flags.DEFINE_integer('top', 5, 'Classes shown per image.', lower_bound=1)
_JSON = flags.DEFINE_string('json', None, 'Write the predictions as JSON to this file; "-": '
                            'to stdout instead of the text.')
_BATCH = flags.DEFINE_integer('batch_size', None, 'Images per batch (default 64, rounded up '
                              'to a multiple of the devices).')


def main(argv) -> int:
  inputs = argv[1:]
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required: the workdir of a training run')
  if not inputs:
    raise app.UsageError('no images given: pass image files and/or folders')
  from alexnet_jax.common import logs
  logs.setup()
  from alexnet_jax.data import classes as class_names
  from alexnet_jax.tools import predict  # after flags: keeps --help fast

  files, missing = predict.list_images(inputs)
  for m in missing:
    print(f'error: {m}: no such file or directory', file=sys.stderr)
  if not files:
    print(f'error: no image files found in {" ".join(inputs)}', file=sys.stderr)
    return exits.USAGE
  try:
    run = predict.load_run(_WORKDIR.value, checkpoint=_CHECKPOINT.value,
                           batch_size=_BATCH.value, crops=int(_CROPS.value))
  except Exception as e:
    return exits.user_fault(e)
  classes = class_names.class_info(run.config)
  top = min(_TOP.value, len(classes))
  to_stdout_json = _JSON.value == '-'
  print(f'{run.describe()}, {_CROPS.value} crop(s), '
        f'{len(files)} file(s), batch {run.batch_size} on {run.mesh.size} device(s)',
        file=sys.stderr)

  records = []      # only the top-k of each file: memory stays small for any folder

  def show(p):
    records.append(predict.to_json(p, classes, top))
    if p.error is not None:
      print(f'error: {p.file}: {p.error}', file=sys.stderr)
    elif not to_stdout_json:
      print(predict.format_text(p, classes, top), flush=True)

  predict.predict_files(run, files, on_result=show, keep=False)
  if _JSON.value:
    status = exits.emit_json(records, _JSON.value)
    if status != exits.OK:
      return status
  failed = sum('error' in r for r in records) + len(missing)
  if failed:
    print(f'{failed} of {len(files) + len(missing)} file(s) failed', file=sys.stderr)
  return exits.PARTIAL if failed else exits.OK


if __name__ == '__main__':
  exits.run(main)
