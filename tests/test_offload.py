"""mesh.offload: EMA copies and frozen networks kept in host memory between steps train to the same state as on the
device, resume from a checkpoint, sample, and are refused in one line where the backend has no host memory."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fewstep_jax import nn, paths, trainer
from fewstep_jax.config_base import base_config
from fewstep_jax.errors import ConfigError
from fewstep_jax.inputs import Teacher
from fewstep_jax.train import offload

SHAPE = (2,)


def _config(offloaded: str, num_steps: int = 3):
  """Toy CTM from an in-memory teacher, with a fixed-rate and a power-function EMA copy, the first its target:
  every kind of offloaded leaf a step touches (a teacher read, an EMA copy read by the loss, both EMA updates)."""
  config = base_config(method='ctm', network='mlp', dataset='toy')
  config.network.update(hidden=16, depth=1, two_times=True)
  config.method.update(teacher='in memory', target_ema=0.9, num_scales=4, heun_steps=2)
  config.optim.update(ema_rates=(0.9,), ema_stds=(0.1,))
  config.train.update(batch_size=16, num_steps=num_steps, log_every=1, checkpoint_every=2, tensorboard=False)
  config.eval.update(at_end=False, nfe=(1,), params='ema_0.9')
  config.mesh.offload = offloaded
  return config


def _teacher(config):
  network = config.network.copy_and_resolve_references()
  network.two_times = False
  module = nn.build_network(network, num_classes=0)
  shapes = jax.eval_shape(lambda: nn.init_params(module, jax.random.PRNGKey(0), jnp.zeros((1,) + SHAPE)))
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), shapes)
  return Teacher(network=network, readout=paths.readout('edm'), data_shape=SHAPE, num_classes=0, params=params)


def _memory_kinds(tree) -> set:
  return {leaf.sharding.memory_kind for leaf in jax.tree.leaves(tree)}


def _host_values(state):
  return jax.tree.map(np.asarray, jax.device_get(state))


def test_offloaded_ema_and_teacher_train_to_the_same_state_and_resume(tmp_path):
  teacher = _teacher(_config(''))
  _, kept, _ = trainer.train(_config(''), None, inputs={'teacher': teacher})
  workdir = str(tmp_path / 'offloaded')
  trainer.train(_config('ema,frozen', num_steps=2), workdir, inputs={'teacher': teacher})
  run, moved, _ = trainer.train(_config('ema,frozen'), workdir, inputs={'teacher': teacher})  # Resumes at step 2.

  assert _memory_kinds(moved.nets['student'].ema) == {'pinned_host'}
  assert _memory_kinds(moved.frozen) == {'pinned_host'}
  assert _memory_kinds(moved.nets['student'].params) == {'device'}
  assert int(moved.step) == 3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               _host_values(moved), _host_values(kept))
  # Sampling reads an offloaded EMA copy from device memory.
  params = run.sampling_params(moved, 'ema_0.9')
  assert _memory_kinds(params) == {'device'}
  samples = run.method.sample_at(params, jax.random.PRNGKey(0), 4, 1)
  assert samples.shape == (4,) + SHAPE and np.all(np.isfinite(np.asarray(samples)))


def test_an_unknown_part_is_one_clear_error():
  with pytest.raises(ConfigError, match="unknown mesh.offload part 'optimizer'"):
    offload.parts_named('ema,optimizer')
  assert offload.parts_named(' ema , frozen,ema') == ('ema', 'frozen')
  assert offload.parts_named('') == ()


def test_a_backend_without_host_memory_is_refused_in_one_line():
  memory = types.SimpleNamespace(kind='device')
  device = types.SimpleNamespace(platform='tpu', id=3, addressable_memories=lambda: [memory])
  with pytest.raises(ConfigError, match=r"needs 'pinned_host' memory, which the tpu device 3 does not have.*"
                                        r"mesh.offload=''"):
    offload.check_backend(('ema',), [device])
  offload.check_backend((), [device])  # Nothing offloaded: nothing to check.
  with pytest.raises(ConfigError, match=r"network.remat='dots_offload' needs 'pinned_host'.*network.remat='dots'"):
    offload.check_backend(('activations',), [device], "network.remat='dots_offload'")
