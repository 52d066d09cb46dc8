r"""Imports published AlexNet weights into a workdir, and exports a run's to torchvision (or
any run's own parameters, the CIFAR-10 nets' too, to .npz/.safetensors/.pth).

  python -m alexnet_jax.weights import --from=torchvision --src=alexnet-owt-7be5be79.pth \
      --workdir=/tmp/alexnet_tv
  python -m alexnet_jax.weights import --from=caffe --src=bvlc_alexnet.caffemodel \
      --workdir=/tmp/alexnet_caffe [--mean=imagenet_mean.binaryproto]
  python -m alexnet_jax.weights export --to=torchvision --workdir=/tmp/alexnet_tv \
      --out=/tmp/alexnet.safetensors [--checkpoint=best]      # or .pth
  python -m alexnet_jax.weights export --to=params --workdir=/tmp/c10 --out=/tmp/c10.npz

An imported workdir holds config.json, preprocessing.npz, checkpoints/0 and best/0:
`evaluate`, `predict` and `--config.init_from=DIR` take it like a trained run. A Caffe import
with --mean takes Caffe's own inputs: each image squashed to 256 x 256, minus that mean image,
then the 227 crops (without it: shorter side 256 and a per-channel mean). Export reads
--checkpoint=latest (the default: the final model) or best, and says which step. The
mappings (layouts, flatten order, normalisation, BGR, dropout placement) are in
alexnet_jax/tools/weights.py and docs/weights.md. --to=params writes the run's parameters
as they are, keyed '<layer>.kernel'/'<layer>.bias' by its own layer names (.npz,
.safetensors, .pth or .pt): the one export of a CIFAR-10 net (model.arch=cifar10_*), which
--to=torchvision refuses naming the arch. Exit status (alexnet_jax/common/exits.py):
2 with one `error:` line for a bad flag, a file of another architecture, a truncated file
or an occupied workdir; 5 when no checkpoint of the run restores. --dst is the old name of
--out (deprecated, removed in the next release).
"""

from __future__ import annotations

import sys

from absl import app, flags

from alexnet_jax.common import exits, logs

_FROM = flags.DEFINE_enum('from', None, ['torchvision', 'caffe'], 'import: the file\'s kind.')
_SRC = flags.DEFINE_string('src', None, 'import: the weights file (.pth, .pt, .safetensors, '
                           '.caffemodel).')
_MEAN = flags.DEFINE_string('mean', None, 'import --from=caffe: the mean image '
                            '(imagenet_mean.binaryproto); inputs then squash to its size '
                            'and subtract it, as Caffe.')
_TO = flags.DEFINE_enum('to', 'torchvision', ['torchvision', 'params'],
                        "export: torchvision's AlexNet state dict, or the run's own "
                        'parameters by its layer names (any model.arch).')
_OUT = flags.DEFINE_string('out', None, 'export: the file to write (.pth, .pt or '
                           '.safetensors; --to=params also .npz).')
_DST = flags.DEFINE_string('dst', None, 'Deprecated: the old name of --out.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'import: the workdir to create; export: the '
                               'run to read.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'import: replace a run already in '
                               '--workdir.')
_CHECKPOINT = exits.define_checkpoint('export: ')


def main(argv) -> int:
  if len(argv) != 2 or argv[1] not in ('import', 'export'):
    raise app.UsageError('usage: python -m alexnet_jax.weights import|export [flags]')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required')
  if argv[1] == 'import' and not (_FROM.value and _SRC.value):
    raise app.UsageError('import needs --from=torchvision|caffe and --src=FILE')
  if _MEAN.value and not (argv[1] == 'import' and _FROM.value == 'caffe'):
    raise app.UsageError('--mean is for import --from=caffe (a Caffe .binaryproto mean image)')
  out = exits.deprecated_flag(_DST, _OUT)
  if argv[1] == 'export' and not out:
    raise app.UsageError('export needs --out=FILE (.pth, .pt or .safetensors; --to=params '
                         'also .npz)')
  logs.setup()
  from alexnet_jax.tools import weights as weight_io  # after flags: keeps --help fast
  try:
    if argv[1] == 'import':
      if _FROM.value == 'torchvision':
        workdir = weight_io.import_torchvision(_SRC.value, _WORKDIR.value,
                                               overwrite=_OVERWRITE.value)
      else:
        workdir = weight_io.import_caffe(_SRC.value, _WORKDIR.value,
                                         overwrite=_OVERWRITE.value, mean=_MEAN.value)
      with_mean = f' with the mean image {_MEAN.value} (inputs squashed)' if _MEAN.value else ''
      print(f'imported {_SRC.value} ({_FROM.value}){with_mean} into {workdir}: config.json, '
            'preprocessing.npz, checkpoints/0, best/0')
    else:
      export = {'torchvision': weight_io.export_torchvision,
                'params': weight_io.export_params}[_TO.value]
      notes, step = export(_WORKDIR.value, out, checkpoint=_CHECKPOINT.value)
      for note in notes:
        print(f'warning: {note}', file=sys.stderr)
      print(f'exported the {_CHECKPOINT.value} checkpoint (step {step}) of {_WORKDIR.value} '
            f'to {out}')
  except Exception as e:      # WeightsError is a ValueError
    return exits.user_fault(e)
  return exits.OK


if __name__ == '__main__':
  exits.run(main)
