"""Helpers of `t4a_jax.train` (Stage One training): config checks (`config`), models,
train state and the jitted step (`state`), checkpoints (`checkpointing`), console /
TensorBoard / sample-video output (`observe`)."""
