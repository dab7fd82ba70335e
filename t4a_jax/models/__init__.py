"""Stage One networks in Flax NNX (U-Net, VAE, CLIP towers), channels-last.

    unet = load("ckpt/unet")                       # one model: config.json + Orbax params
    bundle = load_bundle("out/stage1_tiny/models") # the Stage One models, checked together
    save_bundle(bundle, "workdir/models")

`unet_config` holds the U-Net's sizes and switches, `encoders` the condition encoders
both training and sampling use (text per view, IP-Adapter image embeddings, VAE
latents). Attribute names mirror the PyTorch originals so that `tools/convert_weights`
maps checkpoints mechanically (the diffusers config parsers live there too).
"""

from t4a_jax.models.bundle import (ModelBundle, SamplingDefaults, load_bundle, save_bundle,
                                   with_compute)
from t4a_jax.models.io import abstract_model, load, save

__all__ = ["ModelBundle", "SamplingDefaults", "abstract_model", "load", "load_bundle", "save",
           "save_bundle", "with_compute"]
