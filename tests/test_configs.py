"""Every experiment config loads, is locked, and builds its method and state shapes (no data, no compile)."""
import glob

import jax
import pytest

from conftest import REPO
from fewstep_jax.config_base import load_config
from fewstep_jax.methods import build_method

CONFIGS = sorted(glob.glob(str(REPO / 'configs/*/*.py')))
# The per-example shape and label count each dataset gives the method.
DATA = {('toy', ''): ((2,), 0), ('digits', ''): ((8, 8, 1), 10), ('tfds', 'cifar10'): ((32, 32, 3), 10),
        ('tfds', 'imagenet_resized/64x64'): ((64, 64, 3), 1000), ('latents', ''): ((32, 32, 4), 1000)}


def test_there_are_configs_for_each_dataset():
  assert {path.split('/')[-2] for path in CONFIGS} >= {'toy', 'digits', 'cifar10', 'imagenet64',
                                                       'imagenet256_latent'}


@pytest.mark.parametrize('path', CONFIGS, ids=lambda path: '/'.join(path.split('/')[-2:]))
def test_config_builds_its_method(path):
  config = load_config(path)
  with pytest.raises(KeyError):
    load_config(path, {'train.no_such_field': 1})
  if config.data.name == 'reflow_pairs':  # Pairs carry the shape of the dataset their teacher learned.
    folder = path.split('/')[-2]
    data_shape, num_classes = DATA[('tfds', folder) if folder == 'cifar10' else (folder, '')]
  else:
    data_shape, num_classes = DATA[config.data.name, config.data.tfds_name]
  if not config.data.conditional:
    num_classes = 0
  method = build_method(config, data_shape=data_shape, num_classes=num_classes)
  state = jax.eval_shape(method.init, jax.random.PRNGKey(0))
  assert int(state.step.size) == 1
  assert config.eval.params in ['params'] + list(state.nets['student'].ema)
