"""Stage One networks in Flax NNX (U-Net, VAE, CLIP towers), channels-last.

Attribute names mirror the PyTorch originals so that `tools/convert_weights` maps
checkpoints mechanically.
"""

from t4a_jax.models.bundle import ModelBundle, load_bundle, save_bundle
from t4a_jax.models.io import abstract_model, load, save

__all__ = ["ModelBundle", "abstract_model", "load", "load_bundle", "save", "save_bundle"]
