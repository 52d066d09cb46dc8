r"""Training curves from one or more runs' metrics.jsonl, saved as a PNG.

  python -m alexnet_jax.plots --workdir=/tmp/alexnet_default
  python -m alexnet_jax.plots --workdir=/tmp/a --workdir=/tmp/b --labels=baseline,no_lrn \
      --out=/tmp/curves.png --x=epoch

Four panels: loss and top-1 accuracy (columns) for the train split (the logged
running means, solid) and the eval split (dashed, with markers) (rows), against the
global step or the epoch; one colour per run. Prints the PNG's path. The library
half is alexnet_jax.tools.curves.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

_WORKDIRS = flags.DEFINE_multi_string(
    'workdir', None, 'A run directory holding metrics.jsonl; repeat for several runs.')
_LABELS = flags.DEFINE_list('labels', None, 'Comma-separated legend labels (default: the '
                            'workdir names).')
_OUT = flags.DEFINE_string('out', None, 'PNG path (default: curves.png in the first workdir).')
_X = flags.DEFINE_enum('x', 'step', ['step', 'epoch'], 'The x axis.')
_TITLE = flags.DEFINE_string('title', None, 'Figure title.')


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not _WORKDIRS.value:
    raise app.UsageError('--workdir is required, e.g. python -m alexnet_jax.plots '
                         '--workdir=/tmp/alexnet')
  from alexnet_jax.common import logs  # after flags: keeps --help fast
  from alexnet_jax.tools import curves as plotting
  logs.setup()
  out = _OUT.value or os.path.join(_WORKDIRS.value[0], 'curves.png')
  try:
    path = plotting.plot_runs(_WORKDIRS.value, out, _LABELS.value, x=_X.value,
                              title=_TITLE.value)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(path)
  return 0


if __name__ == '__main__':
  app.run(main)
