"""Stage One training, the helpers of `python -m t4a_jax.train`: the objective
(`objective`: L = l1 L_diff + l2 L_corr + l3 L_pos), config checks (`config`), the model
bundle on the mesh, train state and the jitted step (`state`), checkpoints
(`checkpointing`), console / TensorBoard / sample-video output (`observe`).

    loss, parts = stage_one_loss(unet, batch, schedule, key, StageOneLossConfig(),
                                 (256, 256))
"""

from t4a_jax.training.objective import (DEFAULT_TAP, StageOneBatch, StageOneLossConfig,
                                        stage_one_loss)

__all__ = ["DEFAULT_TAP", "StageOneBatch", "StageOneLossConfig", "stage_one_loss"]
