r"""Classifies image files with a trained run: top-k classes with names and probabilities.

  python -m alexnet_jax.predict --workdir=/tmp/alexnet photo.jpg more_photos/
  python -m alexnet_jax.predict --workdir=DIR --crops=10 --top=3 --json=- IMAGE_OR_FOLDER...

The run's own preprocessing is used (its config.json: resize, crop size, mean, input
scale), on every local device, in fixed-size batches (the last one padded) through one
compiled program. A folder is searched recursively for image files (.jpg .jpeg .png .bmp
.gif .webp, any case); a file named explicitly is tried whatever its extension. Grayscale,
CMYK and PNGs named .JPEG are converted to RGB like the training pipeline does; a file that
cannot be decoded (not an image, truncated) gets an `error:` line on stderr and the others
are still classified.

Output: per image, its path and the top-k classes (probability, class index, synset or
label, name) on stdout; `--json=-` writes a JSON list instead ({'file', 'top': [{'index',
'label', 'name', 'prob'}]} or {'file', 'error'} per image), `--json=FILE` writes it to FILE
besides the text. A progress line goes to stderr for runs longer than a few seconds.

Exit status: 0 every image classified; 1 some file could not be read or decoded (the
others were classified); 2 usage error (no --workdir, no such workdir or no checkpoint in
it, no image found); 5 no checkpoint of the run restores.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

_WORKDIR = flags.DEFINE_string('workdir', None, "A training run's workdir (config.json and "
                               'checkpoints).')
_WHICH = flags.DEFINE_enum('which', 'best', ['best', 'latest'],
                           'best: best validation top-1; latest: last saved step.')
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
    raise app.UsageError('--workdir is required: the workdir of a training run', exitcode=2)
  if not inputs:
    raise app.UsageError('no images given: pass image files and/or folders', exitcode=2)
  from alexnet_jax.common import logs
  logs.setup()
  from alexnet_jax.data import classes as class_names
  from alexnet_jax.run import checkpoints  # after flags: keeps --help fast
  from alexnet_jax.tools import predict

  files, missing = predict.list_images(inputs)
  for m in missing:
    print(f'error: {m}: no such file or directory', file=sys.stderr)
  if not files:
    print(f'error: no image files found in {" ".join(inputs)}', file=sys.stderr)
    return 2
  try:
    run = predict.load_run(_WORKDIR.value, which=_WHICH.value, batch_size=_BATCH.value,
                             crops=int(_CROPS.value))
  except Exception as e:
    return logs.user_fault(e, checkpoints.EXIT_STATUSES)
  classes = class_names.class_info(run.config)
  top = min(_TOP.value, len(classes))
  to_stdout_json = _JSON.value == '-'
  print(f'{run.which} checkpoint (step {run.step}) of {run.workdir}, {_CROPS.value} crop(s), '
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
  if to_stdout_json:
    json.dump(records, sys.stdout, indent=1)
    sys.stdout.write('\n')
  elif _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(records, f, indent=1)
  failed = sum('error' in r for r in records) + len(missing)
  if failed:
    print(f'{failed} of {len(files) + len(missing)} file(s) failed', file=sys.stderr)
  return 1 if failed else 0


if __name__ == '__main__':
  app.run(main)
