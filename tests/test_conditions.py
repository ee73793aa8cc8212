"""conditions.Conditioning: the null, CFG dropout, the guided mix and the evaluation conditions, on class labels and on
text conditions (a pytree of token states, a pooled vector and SDXL's size ids)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fewstep_jax.conditions import Conditioning
from fewstep_jax.errors import ConfigError

LABELS = Conditioning.of_labels(10)
# A text null of its own (the empty prompt's encoding): tokens [L=3, D=2], pooled [4], size ids [6].
NULL_TEXT = {'tokens': np.full((3, 2), -1.0, np.float32), 'pooled': np.full((4,), -2.0, np.float32),
             'time_ids': np.zeros((6,), np.float32)}
PROMPTS = {'tokens': np.arange(5 * 3 * 2, dtype=np.float32).reshape(5, 3, 2),
           'pooled': np.arange(5 * 4, dtype=np.float32).reshape(5, 4), 'time_ids': np.ones((5, 6), np.float32)}
TEXT = Conditioning('text', null_text=NULL_TEXT, prompts=PROMPTS)


def text_batch(n):
  return jax.tree.map(lambda leaf: jnp.asarray(leaf)[np.arange(n) % 5], PROMPTS)


def test_labels_null_is_the_class_count_and_dropout_rate():
  y = jnp.zeros((20_000,), jnp.int32)
  dropped = LABELS.drop(jax.random.PRNGKey(0), y, 0.1)
  assert set(np.unique(dropped)) == {0, 10}
  np.testing.assert_allclose(jnp.mean(dropped == 10), 0.1, atol=0.01)
  np.testing.assert_array_equal(LABELS.is_conditional(dropped), dropped != 10)
  assert LABELS.drop(jax.random.PRNGKey(0), y, 0.0) is y
  assert Conditioning.of_labels(0).kind == 'none' and not Conditioning.of_labels(0).conditional


def test_text_dropout_replaces_whole_rows_by_the_null():
  batch = text_batch(4000)
  dropped = TEXT.drop(jax.random.PRNGKey(1), batch, 0.25)
  is_null = ~TEXT.is_conditional(dropped)
  np.testing.assert_allclose(jnp.mean(is_null), 0.25, atol=0.03)
  for name, leaf in dropped.items():  # Every leaf of a dropped row is the null's; the others are untouched.
    rows = np.asarray(leaf)
    np.testing.assert_array_equal(rows[np.asarray(is_null)], np.broadcast_to(NULL_TEXT[name], rows[np.asarray(is_null)].shape))
    np.testing.assert_array_equal(rows[~np.asarray(is_null)], np.asarray(batch[name])[~np.asarray(is_null)])
  assert not np.any(np.asarray(TEXT.is_conditional(TEXT.null(batch))))
  assert np.all(np.asarray(TEXT.is_conditional(batch)))


@pytest.mark.parametrize('conditioning, condition', [(LABELS, jnp.array([0, 1, 2])), (TEXT, text_batch(3))],
                         ids=['label', 'text'])
def test_guided_mix_is_null_plus_w_times_the_difference(conditioning, condition):
  # A model that reveals its condition: a number per row (the label, or the pooled vector's first entry).
  reveal = lambda y: (y.astype(jnp.float32) if conditioning.kind == 'label' else y['pooled'][:, 0])
  model = lambda z, t, y: jnp.broadcast_to(reveal(y)[:, None] + 1.0, z.shape)
  z, t = jnp.zeros((3, 2)), jnp.full((3,), 0.5)
  cond, null = reveal(condition) + 1.0, reveal(conditioning.null(condition)) + 1.0
  np.testing.assert_allclose(conditioning.guided(model, condition, 2.0)(z, t)[:, 0], null + 2.0 * (cond - null))
  np.testing.assert_allclose(conditioning.guided(model, condition, 1.0)(z, t)[:, 0], cond)


def test_evaluation_conditions_cycle_labels_and_prompts():
  np.testing.assert_array_equal(LABELS.for_samples(np.arange(23)), np.arange(23) % 10)
  got = TEXT.for_samples(np.arange(7))
  np.testing.assert_array_equal(got['tokens'], PROMPTS['tokens'][np.arange(7) % 5])
  assert Conditioning().for_samples(np.arange(3)) is None
  with pytest.raises(ConfigError, match='no evaluation prompts'):
    Conditioning('text', null_text=NULL_TEXT).for_samples(np.arange(3))


def test_examples_and_refusals():
  assert LABELS.example(4).shape == (4,) and LABELS.example(4).dtype == jnp.int32
  assert jax.tree.map(jnp.shape, TEXT.example(2)) == {'tokens': (2, 3, 2), 'pooled': (2, 4), 'time_ids': (2, 6)}
  LABELS.require_classes('a coupling')
  with pytest.raises(ConfigError, match='a coupling needs class labels'):
    TEXT.require_classes('a coupling')
  with pytest.raises(ValueError, match="text conditions need their null"):
    Conditioning('text')
  with pytest.raises(ValueError, match='unknown condition kind'):
    Conditioning('image')


def test_a_built_method_keeps_its_inputs_declaration_and_reads_text_conditions():
  """A method's instance still answers `inputs(config)` (its resolved values are `given_inputs`), and a coupling
  that pairs noise within classes refuses a text-conditioned run in one line."""
  import os
  from fewstep_jax import methods
  from fewstep_jax.config_base import load_config
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = load_config(os.path.join(repo, 'configs/toy/flow_matching.py'), {})
  method = methods.build_method(config, data_shape=(2,), num_classes=0)
  assert method.inputs(config) == type(method).inputs(config) and method.given_inputs == {}
  assert method.conditioning.kind == 'none'
  config = load_config(os.path.join(repo, 'configs/toy/flow_matching.py'), {'method.coupling': 'exact'})
  with pytest.raises(ConfigError, match="method.coupling='exact' .* needs class labels"):
    methods.build_method(config, data_shape=(2,), num_classes=0, conditioning=TEXT)


# Methods traced with text conditions on the tiny SD U-Net (two times for the flow maps). CTM is left out: its
# teacher is a one-time network beside its two-time student, which this test describes as one network.
FLOW_MAPS = ('meanflow', 'split_meanflow', 'shortcut', 'twinflow')
TEXT_METHODS = ('edm', 'flow_matching', 'cd', 'sct', 'scd', 'consistency_fm', 'dmd2', 'sid', 'lcm') + FLOW_MAPS


# Traced by default: one method per family (10 to 16 s each on two cores); the others under `pytest -m slow`.
SLOW_TEXT_METHODS = ('flow_matching', 'sct', 'consistency_fm', 'sid', 'split_meanflow', 'twinflow', 'lcm')


@pytest.mark.parametrize('name', [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_TEXT_METHODS else name
                                  for name in TEXT_METHODS])
def test_every_method_traces_its_step_on_text_conditions(name):
  """The training step of each method, traced (jax.eval_shape) on the captioned digits' condition shapes: a method
  that indexes or builds conditions as arrays (y[rows], a label fill) fails here with a text condition's dict."""
  _trace_text_step(name, with_x=True)


@pytest.mark.parametrize('name', ('sid', pytest.param('dmd2', marks=pytest.mark.slow),
                                  pytest.param('tdm', marks=pytest.mark.slow)))
def test_data_free_methods_trace_their_step_on_conditions_alone(name):
  """A prompt list's batches hold y alone: the data-free methods take their batch size from it."""
  from fewstep_jax import methods
  assert not methods.method_class(name).reads_data_images(_config(name))
  _trace_text_step(name, with_x=False)


def _config(name):
  from fewstep_jax.config_base import base_config
  config = base_config(method=name, network='sd_unet', dataset='digits_text')
  config.network.update(preset='digits', two_times=name in FLOW_MAPS)
  return config


def _trace_text_step(name, with_x: bool):
  from conftest import described_teachers, digits_text_conditioning
  from fewstep_jax import methods
  config = _config(name)
  if name == 'twinflow':  # Its target EMA must be one of the copies the optimizer keeps.
    config.optim.ema_rates = (config.method.target_ema,)
    config.eval.params = f'ema_{config.method.target_ema}'
  text = digits_text_conditioning()
  method = methods.build_method(config, data_shape=(8, 8, 1), num_classes=0,
                                inputs=described_teachers(config, (8, 8, 1), 0), conditioning=text)
  frozen = {}
  for input_name, spec in type(method).inputs(config).items():
    if hasattr(spec, 'readout') or hasattr(spec, 'same_network'):
      frozen[input_name] = jax.eval_shape(lambda key: method.init(key).nets['student'].params, jax.random.key(0))
  state = jax.eval_shape(method.init, jax.random.key(0), frozen) if frozen else jax.eval_shape(method.init,
                                                                                                jax.random.key(0))
  batch = {'y': jax.tree.map(lambda row: jax.ShapeDtypeStruct((4,) + row.shape, jnp.float32), text.null_text)}
  if with_x:
    batch['x'] = jax.ShapeDtypeStruct((4, 8, 8, 1), jnp.float32)
  options = method.step_options(0)
  new_state, _ = jax.eval_shape(lambda s, b, k: method.step(s, b, k, **options), state, batch, jax.random.key(1))
  assert jax.tree.map(jnp.shape, new_state.nets) == jax.tree.map(jnp.shape, state.nets)
