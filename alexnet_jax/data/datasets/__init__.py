"""Datasets that ship with the package.

Importing this package registers them with TFDS, so `tfds.builder('alexnet_shapes/tiny')`
and `tfds.load('alexnet_shapes')` work once `alexnet_jax.data.datasets` has been imported.
"""

from alexnet_jax.data.datasets.shapes import AlexnetShapes, ShapesConfig, builder

__all__ = ['AlexnetShapes', 'ShapesConfig', 'builder']
