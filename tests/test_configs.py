"""Every experiment config loads, is locked, and builds its method and state shapes (no data, no compile)."""
import glob

import jax
import numpy as np
import pytest

from conftest import REPO, described_teachers, digits_text_conditioning
from fewstep_jax.conditions import Conditioning
from fewstep_jax.config_base import load_config
from fewstep_jax.methods import build_method

CONFIGS = sorted(path for path in glob.glob(str(REPO / 'configs/*/*.py')) if not path.endswith('/common.py'))
# The per-example shape and label count each dataset gives the method.
DATA = {('toy', ''): ((2,), 0), ('digits', ''): ((8, 8, 1), 10), ('tfds', 'cifar10'): ((32, 32, 3), 10),
        ('tfds', 'imagenet_resized/64x64'): ((64, 64, 3), 1000), ('latents', ''): ((32, 32, 4), 1000),
        ('digits_text', ''): ((8, 8, 1), 0)}
TEXT = digits_text_conditioning()  # The captioned digits' text conditions, as shapes.
# A pipeline's prompts (data 'pipeline_prompts'), per config folder: its latents' shape and text conditions.
PIPELINES = {
    'sd15': ((64, 64, 4), Conditioning('text', null_text={'tokens': np.zeros((77, 768), np.float32)})),
    'sdxl': ((128, 128, 4), Conditioning('text', null_text={'tokens': np.zeros((77, 2048), np.float32),
                                                            'pooled': np.zeros((1280,), np.float32),
                                                            'time_ids': np.zeros((6,), np.float32)})),
}


def test_there_are_configs_for_each_dataset():
  assert {path.split('/')[-2] for path in CONFIGS} >= {'toy', 'digits', 'digits_text', 'cifar10', 'imagenet64',
                                                       'imagenet256_latent'}


# SDXL's full-size U-Net takes 5 s to trace: one of its configs by default, the other under -m slow.
SLOW_CONFIGS = ('sdxl/lcm_lora.py',)


@pytest.mark.parametrize('path', [pytest.param(path, marks=pytest.mark.slow) if path.endswith(SLOW_CONFIGS) else path
                                  for path in CONFIGS], ids=lambda path: '/'.join(path.split('/')[-2:]))
def test_config_builds_its_method(path):
  config = load_config(path)
  with pytest.raises(KeyError):
    load_config(path, {'train.no_such_field': 1})
  conditioning, readout = (TEXT if config.data.name == 'digits_text' else None), 'edm'
  if config.data.name == 'reflow_pairs':  # Pairs carry the shape of the dataset their teacher learned.
    folder = path.split('/')[-2]
    data_shape, num_classes = DATA[('tfds', folder) if folder == 'cifar10' else (folder, '')]
  elif config.data.name == 'pipeline_prompts' or path.split('/')[-2] in PIPELINES:  # An SD pipeline's prompts or
    # captioned latents.
    (data_shape, conditioning), num_classes, readout = PIPELINES[path.split('/')[-2]], 0, 'sd'
  else:
    data_shape, num_classes = DATA[config.data.name, config.data.tfds_name]
  if not config.data.conditional:
    num_classes = 0
  method = build_method(config, data_shape=data_shape, num_classes=num_classes,
                        inputs=described_teachers(config, data_shape, num_classes, readout), conditioning=conditioning)
  state = jax.eval_shape(method.init, jax.random.PRNGKey(0))
  assert int(state.step.size) == 1
  if method.trains:
    assert config.eval.params in ['params'] + list(state.nets['student'].ema)
  else:  # A teacher's sampler: its one parameter copy.
    assert config.eval.params == 'params' and not state.nets


def test_a_stored_config_from_before_a_new_hyperparameter_takes_its_default():
  """A run's config.json written before a field existed (here CTM's gan_weight, the eval grid file) loads with that
  field's default, so that eval and sample of older runs keep working; stored values win, a field stored under its
  former name (eval.schedule) reads under its new one."""
  import json
  from fewstep_jax.config_base import config_from_json
  stored = json.loads(load_config(str(REPO / 'configs/toy/ctm.py')).to_json())
  del stored['method']['gan_weight'], stored['eval']['grid_file']
  stored['method']['dsm_weight'] = 0.5
  config = config_from_json(stored)
  assert config.method.gan_weight == 0.0 and config.eval.grid_file == '' and config.method.dsm_weight == 0.5
  assert config.is_locked
  stored['eval']['schedule'] = 'grids.json'
  assert config_from_json(stored).eval.grid_file == 'grids.json'
