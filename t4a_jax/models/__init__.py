"""Stage One networks in Flax NNX (U-Net, VAE, CLIP towers), channels-last.

Attribute names mirror the PyTorch originals so that `tools/convert_weights` maps
checkpoints mechanically.
"""
