"""fewstep_jax: training, distilling and evaluating few-step generative models in JAX.

The library API for notebooks and scripts is `fewstep_jax.api` (base_config, load_config, train, sample, evaluate,
open_run); the command line is `python -m fewstep_jax.main`.
"""
