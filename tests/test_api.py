"""fewstep_jax.api: a toy run trained through the library API (no command line) is sampled and evaluated in memory,
and the same run opened from its workdir samples the same points."""
import numpy as np

from fewstep_jax import api


def test_train_sample_evaluate_and_open_a_toy_run(tmp_path):
  config = api.base_config(method='flow_matching', network='mlp', dataset='toy')
  config.network.update(hidden=32, depth=2)
  config.train.update(num_steps=60, batch_size=64, log_every=30, checkpoint_every=60)
  config.optim.update(lr=1e-3, ema_rates=(0.9,))
  config.eval.update(params='ema_0.9', nfe=(1, 2), num_samples=128)
  trained = api.train(config, str(tmp_path / 'run'))
  assert trained.finished and trained.step == 60

  samples, labels = api.sample(trained, nfe=2, n=100)
  assert samples.shape == (100, 2) and labels is None and np.isfinite(samples).all()
  first, _ = api.sample(trained, nfe=2, n=10)
  np.testing.assert_allclose(first, samples[:10], atol=1e-5)  # Sample i does not depend on n (to rounding).

  rows = api.evaluate(trained, nfe=(1,), num_samples=128)
  assert {(row['metric'], row['nfe'], row['params']) for row in rows} == {
      (metric, 1, 'ema_0.9') for metric in ('sliced_w2', 'mmd_rbf', 'off_support', 'parts_covered')}
  w2 = next(row for row in rows if row['metric'] == 'sliced_w2')
  assert w2['value'] > w2['reference'] > 0  # 60 steps: far from the floor of two true samples.
  assert '| sliced_w2 |' in api.results_table(rows).replace('  ', ' ')

  opened = api.open_run(str(tmp_path / 'run'))
  assert opened.step == 60 and opened.config.method.name == 'flow_matching'
  np.testing.assert_allclose(api.sample(opened, nfe=2, n=100)[0], samples, rtol=1e-6, atol=1e-6)
