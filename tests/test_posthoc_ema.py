"""EDM2's post-hoc EMA: the coefficient solve against the discrete profiles the power-function EMA really applies,
and a trained run reconstructed into a run that opens as a teacher."""
import os

import jax
import numpy as np

from conftest import REPO
from fewstep_jax import runs
from fewstep_jax.tools import posthoc_ema
from fewstep_jax.config_base import load_config
from fewstep_jax.train import state as state_lib


def discrete_profile(std, end):
  """The weight [end] each update's parameters carry in the power-function EMA after `end` updates: the first
  update copies (beta_1 = 0), then e <- beta_n e + (1 - beta_n) p_n."""
  gamma = state_lib.power_ema_exponent(std)
  np.testing.assert_allclose(float(state_lib.power_ema_rate(std, 9)), 0.9 ** (gamma + 1), rtol=1e-6)
  weights = np.zeros(end)
  for n in range(1, end + 1):
    beta = (1.0 - 1.0 / n) ** (gamma + 1)  # state_lib.power_ema_rate, in numpy (as checked above).
    weights *= beta
    weights[n - 1] += 1.0 - beta
  return weights


def test_coefficients_reconstruct_a_profile_from_the_discrete_snapshots():
  ends = list(range(100, 1001, 100))
  stds = (0.05, 0.1)
  found = [(end, std) for end in ends for std in stds]
  # A tracked profile is reconstructed by itself.
  x = posthoc_ema.coefficients([e for e, _ in found], [s for _, s in found], 1000, 0.05)
  np.testing.assert_allclose(x, np.eye(len(found))[found.index((1000, 0.05))], atol=1e-6)
  # Another width ending earlier: the combination of the snapshots' discrete weight profiles is close to the
  # target's discrete profile (EDM2's approximation), far closer than the nearest single snapshot.
  end, std = 800, 0.075
  x = posthoc_ema.coefficients([e for e, _ in found], [s for _, s in found], end, std)
  np.testing.assert_allclose(np.sum(x), 1.0, rtol=1e-9)
  combined = sum(w * np.pad(discrete_profile(s, e), (0, 1000 - e)) for w, (e, s) in zip(x, found))
  target = np.pad(discrete_profile(std, end), (0, 1000 - end))
  error = np.linalg.norm(combined - target) / np.linalg.norm(target)
  nearest = min(np.linalg.norm(np.pad(discrete_profile(s, e), (0, 1000 - e)) - target) for e, s in found)
  print(f'relative L2 error {error:.4f}; nearest single snapshot {nearest / np.linalg.norm(target):.4f}')
  assert error < 0.05 and error < 0.2 * nearest / np.linalg.norm(target), (error, nearest)


def test_a_run_is_reconstructed_into_a_run_that_opens_as_a_teacher(tmp_path):
  from fewstep_jax import trainer
  workdir, out = str(tmp_path / 'run'), str(tmp_path / 'phema')
  overrides = {'network.hidden': 16, 'network.depth': 1, 'train.num_steps': 30, 'train.batch_size': 8,
               'train.checkpoint_every': 10, 'train.max_to_keep': 5, 'train.log_every': 10,
               'train.tensorboard': False, 'eval.at_end': False, 'optim.ema_stds': (0.05, 0.1)}
  trainer.train(load_config(os.path.join(REPO, 'configs/toy/edm.py'), overrides), workdir)

  end, used, params = posthoc_ema.reconstruct(workdir, 0.05)
  assert end == 30 and {s for s, _, _ in used} == {10, 20, 30}
  _, tracked = runs.restore_parameters(workdir, runs.read_run_info(workdir)[1], ['phema_0.05'], step=30)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params, tracked['phema_0.05'])

  end, used, params = posthoc_ema.reconstruct(workdir, 0.075, step=20)
  assert end == 20 and {s for s, _, _ in used} == {10, 20}
  posthoc_ema.write_run(out, workdir, 0.075, end, used, params)
  teacher = runs.open_teacher(out)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), teacher.params, params)
  assert runs.read_run_info(out)[0].posthoc_ema.std == 0.075
  try:
    posthoc_ema.write_run(out, workdir, 0.075, end, used, params)
  except FileExistsError as error:
    assert 'already holds a run' in str(error)
  else:
    raise AssertionError('a second write into the same directory must be refused')
