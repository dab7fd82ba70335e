"""`python -m t4a_jax.evaluate`: the paper's Tables 1, 2 (and 4) for any methods'
outputs (`job.run`); `python -m t4a_jax.evaluate.user_study` makes and collects the
user study of Table 3."""
