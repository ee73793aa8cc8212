"""The one-off commands, each `python -m fewstep_jax.tools.<name>`: importing published checkpoints as runs,
encoding latents, generating teacher ODE pairs, searching sampler grids and post-hoc EMA reconstruction."""
