"""Stage One networks in Flax NNX (U-Net, VAE, CLIP towers), channels-last.

Attribute names mirror the PyTorch originals so that `tools/convert_weights` maps
checkpoints mechanically.
"""

from t4a_jax.models.io import abstract_model, load, save

__all__ = ["abstract_model", "load", "save"]
