# The paper's AlexNet on Imagenette, ten classes of real ImageNet photos (TFDS; the download is
# ~340 MB, so build it once where there is internet access, e.g. on Colab):
#   python -m alexnet_jax.prepare --config=configs/imagenette.py     # download, build, mean, PCA
#   python -m alexnet_jax.main --config=configs/imagenette.py --workdir=/tmp/alexnet_imagenette
#   python -m alexnet_jax.evaluate --workdir=/tmp/alexnet_imagenette   # centre + 10 crops
"""The paper's two-tower model and preprocessing on Imagenette (TFDS `imagenette/320px-v2`).

Data: fast.ai's Imagenette v2, ten easily told apart ImageNet classes (CLASSES), 9,469
training and 3,925 validation photos. The '320px-v2' build config (photos with the shorter
side 320) is the one that fits the paper's input: the host shrinks each photo's centre
square to 256 and the device takes random 224 crops, as on ImageNet. '160px-v2' would
have to be enlarged to 256; 'full-size-v2' is 4.5x the download and every epoch decodes
pixels that are thrown away. The labels are the synsets' sorted order (TFDS's
imagenette_labels.txt), as in ILSVRC-2012's 1000-class list.

Preprocessing: the paper's (section 2 and 4.1): shorter side 256, random 224 crops and
flips, the mean image and the PCA lighting's eigen-decomposition computed once from this
training split (`alexnet_jax.prepare`, or the first run) and cached under data_dir.

Model: the paper's, unchanged but for fc8's 10 outputs: two towers (96-256-384-384-256,
fc 4096-4096, 56,909,194 parameters), LRN, overlapping pooling, dropout 0.5. It is not
narrowed because on one Colab GPU the model is not what is slow. A step of 128 images is
128 x 4.35 GFLOP = 0.56 TFLOP: about 0.2 s on a T4 at a third of its 8 TFLOP/s float32
peak (mesh.model=2 falls back to one device there). Colab's 2 host cores decode and
shrink roughly 1,500 of these photos per second (docs/benchmarks.md: ~750 per core on
ImageNet photos, which are larger), 0.1 s per batch. So an epoch (73 steps) takes about
15-20 s and the 30 epochs here about 10 minutes on a T4 runtime, plus one pass over the
photos for the mean and PCA. This is an estimate: the config has not been run on Colab
or any GPU yet. On a 2-core CPU expect hours.

Recipe: the paper's SGD (momentum 0.9, weight decay 5e-4, learning rate 0.01, batch
128) with three changes for a 9.5k-image dataset trained for minutes, not days: He init
and inputs scaled by 1/128 after the mean, as configs/default.py (the paper's N(0, 0.01)
init on 0-255 inputs was still at chance after 60 steps on the built-in data, docs/ablations.md "The
ablation base", and these 30 epochs are only 2,190 steps), and a fixed schedule, /10 at
epochs 20 and 27, so the run's length is known in advance (the paper's plateau rule:
--config.schedule.name=plateau). At this input scale the paper's LRN is close
to a constant scale (docs/ablations.md, "The ablation base"); for the paper's own scale use
--config.input.scale=1 --config.model.init=paper. On a TPU or an A100/L4/H100,
--config.model.dtype=bfloat16 computes in bfloat16. Do not set input.use_preresized:
320-pixel photos need no pre-resized copy.
"""

from alexnet_jax.common import config_lib

TFDS_NAME = 'imagenette/320px-v2'
# TFDS's imagenette_labels.txt (label i is line i): ImageNet synset, name.
CLASSES = (
    ('n01440764', 'tench'),
    ('n02102040', 'English springer'),
    ('n02979186', 'cassette player'),
    ('n03000684', 'chain saw'),
    ('n03028079', 'church'),
    ('n03394916', 'French horn'),
    ('n03417042', 'garbage truck'),
    ('n03425413', 'gas pump'),
    ('n03445777', 'golf ball'),
    ('n03888257', 'parachute'),
)
TRAIN_EXAMPLES, VALIDATION_EXAMPLES = 9469, 3925


def get_config(arg: str | None = None):
  del arg
  c = config_lib.base()
  c.dataset.name = TFDS_NAME
  c.model.num_classes = len(CLASSES)
  c.model.init = 'he'
  c.input.scale = 1 / 128
  c.input.shuffle_buffer = 10000      # the whole training split
  c.num_epochs = 30.0
  c.schedule.name = 'step'
  c.schedule.step_epochs = (20.0, 27.0)
  c.log_every_steps = 25              # 9,469 // 128 = 73 steps per epoch
  c.checkpoint_every_steps = 146      # every 2 epochs: a disconnect loses at most that
  return c
