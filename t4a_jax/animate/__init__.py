"""`python -m t4a_jax.animate`: the whole job, a static 3D model and a prompt in, an
animated 3D asset out (`job.run`; the stages and outputs are described there)."""
