"""experiments/toy_example.py draws a sampler's trajectory by cutting its compiled plan after each step: the last
state is the sampler's own output and a flow map's first state is its noise, for a flow map and a consistency
sampler."""
import importlib.util
import sys

import jax
import numpy as np
import pytest

from conftest import REPO
from fewstep_jax import api

sys.path.insert(0, str(REPO / 'experiments'))
_spec = importlib.util.spec_from_file_location('toy_example', REPO / 'experiments/toy_example.py')
toy_example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toy_example)


@pytest.mark.parametrize('method,two_times', [('meanflow', True), ('sct', False)])
def test_a_trajectory_ends_at_the_samplers_output(method, two_times):
  config = api.base_config(method=method, network='mlp', dataset='toy')
  config.network.update(hidden=16, depth=1, two_times=two_times)
  config.train.update(num_steps=2, batch_size=16, log_every=1, checkpoint_every=2)
  trained = api.train(config)
  paths = toy_example.trajectories(trained, nfe=4, n=8)
  final = trained.method.sample_at(trained.params(), jax.random.PRNGKey(0), 8, 4)
  assert paths.shape == ((8, 5, 2) if method == 'meanflow' else (8, 4, 2))
  np.testing.assert_allclose(paths[:, -1], final, rtol=1e-5, atol=1e-5)
  if method == 'meanflow':  # The flow map starts from N(0, 1) noise at t = 1: the key's first draw.
    np.testing.assert_allclose(paths[:, 0], jax.random.normal(jax.random.PRNGKey(0), (8, 2)), rtol=1e-6)
  assert np.abs(np.diff(paths, axis=1)).sum(-1).min() > 0  # Every step moves every point.
