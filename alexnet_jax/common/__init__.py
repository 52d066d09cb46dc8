"""Small utilities every floor uses: the config schema, logging, lazy TensorFlow."""
