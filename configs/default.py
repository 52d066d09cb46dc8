# The quick offline run: the built-in `alexnet_shapes` dataset, a narrow AlexNet, CPU ok.
#   python -m alexnet_jax.main --config=configs/default.py --workdir=/tmp/alexnet_default
"""Same model code and recipe as the paper, scaled to a 64x64, 10-class offline dataset."""

from alexnet_jax.common import config_lib


def get_config(arg: str | None = None):
  del arg
  c = config_lib.base()
  c.model.conv_widths = (48, 128, 192, 192, 128)
  c.model.fc_widths = (512, 512)
  c.model.num_classes = 10
  c.model.input_size = 64
  c.model.init = 'he'          # N(0, 0.01) trains too slowly for a 3-minute run
  c.model.dropout_rate = 0.0   # 10k images, few epochs: nothing to regularise yet
  c.dataset.name = 'alexnet_shapes'
  c.dataset.shapes_image_size = 64
  c.dataset.shapes_train_size = 10000
  c.dataset.shapes_validation_size = 1000
  c.input.resize_size = 64
  c.input.scale = 1 / 128      # He init wants inputs of unit scale, not 0-255
  c.input.shuffle_buffer = 10000
  c.batch_size = 128
  c.eval_batch_size = 200     # divides over 1, 2, 4 or 8 devices
  c.num_epochs = 10.0
  c.optimizer.nesterov = True
  c.schedule.name = 'step'
  c.schedule.step_epochs = (7.0, 9.0)
  c.log_every_steps = 20
  c.checkpoint_every_steps = 200
  return c
