r"""Imports published AlexNet weights into a workdir, and exports a run's to torchvision.

  python -m alexnet_jax.weights import --from=torchvision --src=alexnet-owt-7be5be79.pth \
      --workdir=/tmp/alexnet_tv
  python -m alexnet_jax.weights import --from=caffe --src=bvlc_alexnet.caffemodel \
      --workdir=/tmp/alexnet_caffe
  python -m alexnet_jax.weights export --to=torchvision --workdir=/tmp/alexnet_tv \
      --dst=/tmp/alexnet.safetensors          # or .pth

An imported workdir holds config.json, checkpoints/0 and best/0: `evaluate`, `predict`
and `--config.init_from=DIR` take it like a trained run. The mappings (layouts, flatten
order, normalisation, BGR, dropout placement) are in alexnet_jax/tools/weights.py and
docs/weights.md. Exit status 2 with one `error:` line for a file of another architecture, a
truncated file or an occupied workdir; 5 when no checkpoint of the run restores.
"""

from __future__ import annotations

import sys

from absl import app, flags

from alexnet_jax.common import logs

_FROM = flags.DEFINE_enum('from', None, ['torchvision', 'caffe'], 'import: the file\'s kind.')
_SRC = flags.DEFINE_string('src', None, 'import: the weights file (.pth, .pt, .safetensors, '
                           '.caffemodel).')
_TO = flags.DEFINE_enum('to', 'torchvision', ['torchvision'], 'export: the format.')
_DST = flags.DEFINE_string('dst', None, 'export: the file to write (.pth, .pt or '
                           '.safetensors).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'import: the workdir to create; export: the '
                               'run to read.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'import: replace a run already in '
                               '--workdir.')
_CHECKPOINT = flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'],
                                'export: best (best/) or latest (checkpoints/).')


def main(argv) -> int:
  if len(argv) != 2 or argv[1] not in ('import', 'export'):
    raise app.UsageError('usage: python -m alexnet_jax.weights import|export [flags]')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required')
  if argv[1] == 'import' and not (_FROM.value and _SRC.value):
    raise app.UsageError('import needs --from=torchvision|caffe and --src=FILE')
  if argv[1] == 'export' and not _DST.value:
    raise app.UsageError('export needs --dst=FILE (.pth, .pt or .safetensors)')
  logs.setup()
  from alexnet_jax.run import checkpoints  # after flags: keeps --help fast
  from alexnet_jax.tools import weights as weight_io
  try:
    if argv[1] == 'import':
      run = (weight_io.import_torchvision if _FROM.value == 'torchvision'
             else weight_io.import_caffe)
      workdir = run(_SRC.value, _WORKDIR.value, overwrite=_OVERWRITE.value)
      print(f'imported {_SRC.value} ({_FROM.value}) into {workdir}: config.json, '
            'checkpoints/0, best/0')
    else:
      for note in weight_io.export_torchvision(_WORKDIR.value, _DST.value,
                                               which=_CHECKPOINT.value):
        print(f'warning: {note}', file=sys.stderr)
      print(f'exported {_WORKDIR.value} ({_CHECKPOINT.value}) to {_DST.value}')
  except Exception as e:      # WeightsError is a ValueError
    return logs.user_fault(e, checkpoints.EXIT_STATUSES)
  return 0


if __name__ == '__main__':
  app.run(main)
