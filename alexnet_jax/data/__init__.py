"""Where images come from and how they reach the device: sources, tf.data, decode,
augment, statistics, datasets, ImageNet preparation, class names."""
