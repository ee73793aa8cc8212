"""Evaluation: sample metrics, the digits classifier metrics, and pictures of samples."""
from fewstep_jax.eval.digits_classifier import DigitsClassifier
from fewstep_jax.eval.digits_eval import DigitsEvaluator
from fewstep_jax.eval.metrics import frechet_distance, gaussian_stats, mmd_rbf, sliced_wasserstein2
from fewstep_jax.eval.plots import image_grid, save_image_grid, save_scatter
