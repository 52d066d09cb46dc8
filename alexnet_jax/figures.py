r"""The paper's figures from any run: conv1's kernels, fc7 neighbours, training-error curves.

  python -m alexnet_jax.figures kernels --workdir=/tmp/alexnet --out=kernels.png
  python -m alexnet_jax.figures neighbours --workdir=/tmp/alexnet --out=neighbours.png \
      [--queries=5] [--max_train=N]
  python -m alexnet_jax.figures curves --workdir=/tmp/relu --workdir=/tmp/tanh \
      --out=curves.png [--target_error=0.25]
  python -m alexnet_jax.figures curves --workdir=SWEEP_ROOT --out=curves.png
  python -m alexnet_jax.figures curves --workdir=/tmp/a --workdir=/tmp/b --panels --x=epoch \
      --labels=baseline,no_lrn --out=panels.png

kernels (Figure 3): conv1's kernels, one block of rows per tower, each kernel
contrast-normalised on its own; prints each tower's mean colour saturation (per kernel the
mean over pixels of the std across R, G, B of the normalised kernel: 0 for grey kernels).
neighbours (Figure 4): for --queries eval-split images (the first image of each of the
first classes met), the 6 training images nearest in fc7 space (Euclidean, after the ReLU),
searched in batches on the devices over the whole training split (or its first
--max_train images); for a CIFAR-10 net (model.arch=cifar10_*), which has no fc7, in the
space of its last hidden layer, what its output layer reads (local4, conv3_avg or fc64;
the JSON's feature_layer says which). kernels draws a CIFAR-10 net's 5x5 conv1 as one
tower. curves (Figure 1 style): training error against epochs for several
runs (workdirs, or a sweep root of experiments/ablations.py: every run below it), each
labelled by the config fields in which the runs differ (or --labels), with the epoch each
first reaches --target_error marked. curves --panels: four panels instead, loss and top-1
accuracy (columns) of the train split (the logged running means, solid) and the eval split
(dashed, with markers) (rows), against --x=step or epoch, one colour per run.

kernels and neighbours read --checkpoint=latest (the default, the final model) or best, and
say which step. Every figure also writes its numbers as JSON to --json (default: beside the
PNG, FILE.json; `-` for stdout). Exit status (alexnet_jax/common/exits.py): 0 written; 2
usage error (no such workdir, no checkpoint or metrics); 5 no checkpoint restores. The
library half is alexnet_jax.tools.figures (and tools.curves for the panels).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from alexnet_jax.common import exits

FIGURES = ('kernels', 'neighbours', 'curves')
_WORKDIR = flags.DEFINE_multi_string('workdir', None, "A training run's workdir (curves: "
                                     'repeat it, or give a sweep root).')
_WORKDIRS = flags.DEFINE_list('workdirs', None, 'curves: comma-separated workdirs or sweep '
                              'roots (added to --workdir).')
_OUT = flags.DEFINE_string('out', None, 'The PNG to write (default: <figure>.png in the '
                           'first workdir).')
_JSON = flags.DEFINE_string('json', None, 'Where the figure\'s numbers go as JSON: a file, '
                            'or "-" for stdout (default: beside the PNG, FILE.json).')
_CHECKPOINT = exits.define_checkpoint('kernels, neighbours: ')
_QUERIES = flags.DEFINE_integer('queries', 5, 'neighbours: query images.', lower_bound=1)
_MAX_TRAIN = flags.DEFINE_integer('max_train', None, 'neighbours: search only the first N '
                                  'training images.', lower_bound=6)
_BATCH = flags.DEFINE_integer('batch_size', None, 'neighbours: images per batch (default 64).')
_TARGET = flags.DEFINE_float('target_error', 0.25, 'curves: the training error to mark.')
_TITLE = flags.DEFINE_string('title', None, 'Figure title (default: the run).')
_LABELS = flags.DEFINE_list('labels', None, 'curves: legend labels, one per run (default: '
                            'the config fields in which the runs differ).')
_PANELS = flags.DEFINE_bool('panels', False, 'curves: four panels, loss and top-1 of the '
                            'train and eval splits, instead of the training error.')
_X = flags.DEFINE_enum('x', 'step', ['step', 'epoch'], 'curves --panels: the x axis.')


def main(argv) -> int:
  if len(argv) != 2 or argv[1] not in FIGURES:
    raise app.UsageError(f'give one figure: {" | ".join(FIGURES)} (got {argv[1:]})')
  figure = argv[1]
  workdirs = list(_WORKDIR.value or []) + list(_WORKDIRS.value or [])
  if not workdirs:
    raise app.UsageError('--workdir is required')
  if figure != 'curves' and len(workdirs) != 1:
    raise app.UsageError(f'{figure} draws one run: give one --workdir')
  from alexnet_jax.common import logs
  logs.setup()
  from alexnet_jax.tools import figures as figures_lib  # after flags: keeps --help fast
  out = _OUT.value or os.path.join(workdirs[0], f'{figure}.png')
  data_path = _JSON.value or os.path.splitext(out)[0] + '.json'
  text = sys.stderr if data_path == '-' else sys.stdout
  try:
    if figure == 'curves' and _PANELS.value:
      from alexnet_jax.tools import curves
      runs = figures_lib.find_runs(workdirs)
      curves.plot_runs(runs, out, _LABELS.value, x=_X.value, title=_TITLE.value)
      labels = _LABELS.value or curves.default_labels(runs)
      data = {'x': _X.value, 'runs': []}
      for w, label in zip(runs, labels, strict=True):
        records = curves.read_metrics(w)
        data['runs'].append({'run': w, 'label': label, 'final_eval': curves.final_eval(records),
                             'best_eval_top1': curves.best_eval_top1(records)})
        best = data['runs'][-1]['best_eval_top1']
        print(f'{label}: best eval top-1 ' + ('-' if best is None else f'{best:.4f}'),
              file=text)
    elif figure == 'curves':
      data = figures_lib.curves_data(figures_lib.find_runs(workdirs), _TARGET.value,
                                     labels=_LABELS.value)
      figures_lib.plot_curves(data, out, title=_TITLE.value)
      for r in data['runs']:
        hit = r['first_epoch_at_target']
        print(f'{r["label"]}: first at training error <= {_TARGET.value:g} at epoch '
              f'{hit:.2f}' if hit is not None else
              f'{r["label"]}: never at training error <= {_TARGET.value:g} '
              f'(lowest {min(r["errors"]):.3f})', file=text)
    else:
      from alexnet_jax.data import classes as class_names
      from alexnet_jax.tools import predict
      run = predict.load_run(workdirs[0], checkpoint=_CHECKPOINT.value,
                             batch_size=_BATCH.value)
      print(f'{run.describe()}', file=text)
      title = _TITLE.value or f'{os.path.basename(os.path.normpath(workdirs[0]))}, ' \
                              f'{run.checkpoint} checkpoint (step {run.step})'
      if figure == 'kernels':
        data = figures_lib.plot_kernels(run.params, out, title=title)
        for t, s in enumerate(data['saturation']):
          print(f'tower {t}: mean colour saturation {s:.4f} '
                f'({data["kernels_per_tower"]} kernels)', file=text)
      else:
        classes = class_names.class_info(run.config)
        images, labels, indices = figures_lib.pick_queries(run, _QUERIES.value)
        nb = figures_lib.find_neighbours(run, images, labels, query_indices=indices,
                                         max_train=_MAX_TRAIN.value)
        figures_lib.plot_neighbours(nb, [c.name for c in classes], out, title=title)
        queries = [{'eval_index': int(indices[i]), 'label': int(labels[i]),
                    'neighbours': [{'train_index': int(nb.indices[i, j]),
                                    'label': int(nb.labels[i, j]),
                                    'distance': float(nb.distances[i, j])}
                                   for j in range(nb.labels.shape[1])]}
                   for i in range(len(labels))]
        data = {'feature_layer': nb.layer, 'train_images_searched': nb.train_images,
                'queries': queries}
        same = sum(int(q['label'] == n['label']) for q in data['queries']
                   for n in q['neighbours'])
        total = sum(len(q['neighbours']) for q in data['queries'])
        print(f'{len(labels)} queries, {nb.train_images} training images searched in '
              f'{nb.layer} space: {same} of {total} neighbours share the query\'s class',
              file=text)
      data = {'workdir': run.workdir, 'checkpoint': run.checkpoint, 'step': run.step, **data}
  except Exception as e:
    return exits.user_fault(e)
  status = exits.emit_json(data, data_path)
  if status != exits.OK:
    return status
  print(f'written: {out}' + ('' if data_path == '-' else f' ({data_path})'), file=text)
  return exits.OK


if __name__ == '__main__':
  exits.run(main)
