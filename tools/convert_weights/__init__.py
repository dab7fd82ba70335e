"""PyTorch checkpoints -> t4a_jax (Orbax) checkpoints; the converters arrive with the models."""
