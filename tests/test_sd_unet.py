"""The SD U-Net (diffusers' UNet2DConditionModel in flax): diffusers' outputs recorded by
experiments/parity/sd_unet.py --record, the published sizes by shape, the loader's one-line errors, the registry's
'sd_unet' and the 'sd' / 'sd_v' readouts of SD's schedule."""
import json
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import error_line, run_main
from fewstep_jax import errors
from fewstep_jax import paths, runs
from fewstep_jax import nn as networks
from fewstep_jax.nn import sd_unet
from fewstep_jax.tools import import_checkpoint

GOLDEN = os.path.join(os.path.dirname(__file__), 'data', 'sd_unet_golden.npz')
_ADDED = ('text_embeds', 'time_ids')


def golden_entry(name: str) -> dict:
  """The recorded config, diffusers state dict (float16, exact), inputs and output of tiny network `name`."""
  with np.load(GOLDEN) as stored:
    prefix = f'{name}__'
    entry = {key[len(prefix):]: stored[key] for key in stored.files if key.startswith(prefix)}
  entry['config'] = json.loads(entry['config'].item())
  entry['state_dict'], start = {}, 0
  for key, shape in json.loads(entry.pop('weight_shapes').item()):  # The parity script's pack().
    size = int(np.prod(shape))
    entry['state_dict'][key] = entry['weights'][start:start + size].reshape(shape)
    start += size
  assert start == entry.pop('weights').size
  return entry


def write_unet_folder(root, config: dict, state_dict: dict, file_name: str = sd_unet.WEIGHT_FILES[0]) -> str:
  """A diffusers `unet/` folder (config.json and a safetensors file) under `root`; returns the pipeline folder."""
  os.makedirs(root / 'unet', exist_ok=True)
  (root / 'unet' / 'config.json').write_text(json.dumps(dict(_class_name='UNet2DConditionModel', **config)))
  save_file(state_dict, str(root / 'unet' / file_name))
  return str(root)


def relative_error(unet, params, entry) -> float:
  added = {key: entry[key] for key in _ADDED} if 'time_ids' in entry else None
  out = jax.jit(unet.apply)({'params': params}, entry['latents'].transpose(0, 2, 3, 1), entry['timesteps'],
                            entry['encoder_hidden_states'], added, entry.get('timestep_cond'))
  want = entry['output']
  return float(np.abs(np.asarray(out).transpose(0, 3, 1, 2) - want).max() / np.abs(want).max())


def test_sd15_structure_matches_diffusers_from_a_state_dict():
  entry = golden_entry('tiny')
  unet = sd_unet.from_config(entry['config'])
  params = sd_unet.from_state_dict(entry['state_dict'], unet)
  assert relative_error(unet, params, entry) <= 1e-5


def test_sdxl_structure_matches_diffusers_loaded_from_the_fp16_variant_folder(tmp_path):
  entry = golden_entry('tiny_xl')
  assert entry['config']['addition_embed_type'] == 'text_time' and entry['config']['use_linear_projection']
  folder = write_unet_folder(tmp_path, entry['config'], entry['state_dict'], sd_unet.WEIGHT_FILES[1])
  unet, params = sd_unet.load(folder)
  assert unet == sd_unet.from_config(entry['config'])
  assert relative_error(unet, params, entry) <= 1e-5


def test_published_parameter_counts_from_shapes():
  assert sd_unet.parameter_count(sd_unet.from_config('sd15')) == 859_520_964
  shapes = sd_unet.weight_shapes(sd_unet.from_config('sdxl_base'))
  assert sum(int(np.prod(shape)) for shape in shapes.values()) == 2_567_463_684
  # diffusers' names and PyTorch's layouts: linear weights [out, in], conv weights [out, in, kh, kw].
  assert shapes['down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k.weight'] == (1280, 2048)
  assert shapes['down_blocks.1.attentions.0.proj_in.weight'] == (640, 640)
  assert shapes['add_embedding.linear_1.weight'] == (1280, 2816)
  assert shapes['up_blocks.0.upsamplers.0.conv.weight'] == (1280, 1280, 3, 3)


@pytest.fixture(scope='module')
def tiny():
  entry = golden_entry('tiny')
  return entry['config'], entry['state_dict']


def load_error(tmp_path, config, state_dict) -> str:
  with pytest.raises(errors.RunError) as raised:
    sd_unet.load(write_unet_folder(tmp_path, config, state_dict))
  message = str(raised.value)
  assert '\n' not in message
  return message


def test_a_missing_weight_is_named(tiny, tmp_path):
  config, state_dict = tiny
  state_dict = {key: value for key, value in state_dict.items() if key != 'mid_block.attentions.0.proj_in.bias'}
  message = load_error(tmp_path, config, state_dict)
  assert "missing ['mid_block.attentions.0.proj_in.bias']" in message
  assert 'unexpected' not in message and 'check that the config' in message


def test_an_extra_weight_is_named(tiny, tmp_path):
  config, state_dict = tiny
  message = load_error(tmp_path, config, dict(state_dict, **{'class_embedding.linear_1.weight': np.zeros((2, 2))}))
  assert "unexpected ['class_embedding.linear_1.weight']" in message and 'missing' not in message


def test_a_misshapen_weight_is_named_with_both_shapes(tiny, tmp_path):
  config, state_dict = tiny
  message = load_error(tmp_path, config, dict(state_dict, **{'conv_in.weight': np.zeros((8, 4, 1, 1), np.float16)}))
  assert "wrong shapes (name, file, network) [('conv_in.weight', (8, 4, 1, 1), (8, 4, 3, 3))]" in message


def test_an_unreadable_weights_file_is_named(tiny, tmp_path):
  config, _ = tiny
  folder = write_unet_folder(tmp_path, config, {'x': np.zeros(1, np.float32)})
  (tmp_path / 'unet' / sd_unet.WEIGHT_FILES[0]).write_bytes(b'not a safetensors file')
  with pytest.raises(errors.UnreadableWeightsError, match='cannot be read as a .safetensors file'):
    sd_unet.load(folder)


def test_the_config_of_another_model_is_refused(tiny, tmp_path):
  _, state_dict = tiny
  folder = write_unet_folder(tmp_path, {}, state_dict)
  (tmp_path / 'unet' / 'config.json').write_text(json.dumps({'_class_name': 'AutoencoderKL', 'latent_channels': 4}))
  with pytest.raises(errors.ConfigError, match='is the config of AutoencoderKL, not of UNet2DConditionModel'):
    sd_unet.load(folder)


def test_a_folder_without_weights_is_named(tmp_path):
  with pytest.raises(errors.InputNotFoundError, match='holds no U-Net weights'):
    sd_unet.load(str(tmp_path))


@pytest.mark.parametrize('config, words', [
    ({'resnet_time_scale_shift': 'scale_shift'}, "resnet_time_scale_shift='scale_shift' is not implemented"),
    ({'addition_embed_type': 'text'}, "addition_embed_type='text' is not implemented"),
    ({'num_attention_heads': 8}, 'num_attention_heads=8 is not implemented'),
    ({'attention_head_dimm': 8}, "'attention_head_dimm' is not a UNet2DConditionModel config key"),
])
def test_a_config_this_port_cannot_build_is_named(config, words):
  with pytest.raises(errors.ConfigError, match=words):
    sd_unet.from_config(config)


def test_the_registry_builds_a_preset_with_diffusers_names_at_the_top_and_the_text_condition_as_y():
  config = networks.network_defaults('sd_unet')
  config.preset = 'sd15'
  module = networks.build_network(config, num_classes=0)
  x = jax.ShapeDtypeStruct((2, 16, 16, 4), jnp.float32)
  params = jax.eval_shape(lambda key: networks.init_params(module, key, x), jax.random.key(0))
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, sd_unet.abstract_params(sd_unet.from_config('sd15')))
  apply = networks.make_apply(module)
  text = {'tokens': jax.ShapeDtypeStruct((2, 77, 768), jnp.float32)}
  out = jax.eval_shape(apply, params, x, jnp.full((2,), 500.0), None, text)
  assert (out.shape, out.dtype) == ((2, 16, 16, 4), jnp.float32)
  with pytest.raises(ValueError, match=r"sd_unet needs its text condition: y=\{'tokens': \[B, L, 768\]"):
    jax.eval_shape(apply, params, x, jnp.full((2,), 500.0), None, None)


def test_the_registry_refuses_labels_for_sd_unet():
  module = networks.build_network(networks.network_defaults('sd_unet'), num_classes=10)
  with pytest.raises(errors.ConfigError, match='sd_unet is conditioned on text, not on labels'):
    jax.eval_shape(lambda key: networks.init_params(module, key, jnp.zeros((1, 8, 8, 4))), jax.random.key(0))


def sd_alphas_cumprod() -> np.ndarray:
  """SD's abar_j, term by term: beta_j = (sqrt(0.00085) + j (sqrt(0.012) - sqrt(0.00085)) / 999)^2."""
  start, end = math.sqrt(0.00085), math.sqrt(0.012)
  abar, values = 1.0, []
  for j in range(1000):
    abar *= 1.0 - (start + (end - start) * j / 999) ** 2
    values.append(abar)
  return np.array(values)


def test_sd_schedule_is_the_scaled_linear_one():
  sigmas = paths.ddpm_scaled_linear_sigmas()
  np.testing.assert_allclose(1.0 / (1.0 + sigmas**2), sd_alphas_cumprod(), rtol=1e-12)
  np.testing.assert_allclose([sigmas[0], sigmas[-1]], [0.0292, 14.6146], atol=1e-4)  # k-diffusion's SD range.


@pytest.mark.parametrize('readout, prediction', [('sd', 'epsilon'), ('sd_v', 'v_prediction')])
def test_sd_readouts_give_eps_from_the_network_at_sds_timesteps(readout, prediction):
  rng = np.random.default_rng(3)
  x0, eps = rng.standard_normal((2, 3, 4, 8, 8)).astype(np.float32)
  steps = np.array([10, 500, 999])
  abar = sd_alphas_cumprod()[steps][:, None, None, None]
  x_vp = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * eps
  seen = {}

  def raw(params, x, c_noise, r, y, key):  # The exact network: diffusers' epsilon, or its get_velocity.
    seen.update(x=x, c_noise=c_noise, y=y)
    return eps if prediction == 'epsilon' else np.sqrt(abar) * eps - np.sqrt(1 - abar) * x0

  model = paths.readout(readout).model(raw)
  sigma = np.sqrt((1 - abar[:, 0, 0, 0]) / abar[:, 0, 0, 0])
  text = {'tokens': np.zeros((3, 77, 768))}
  np.testing.assert_allclose(model(None, x0 + sigma[:, None, None, None] * eps, sigma, None, text), eps, atol=2e-5)
  np.testing.assert_allclose(seen['x'], x_vp, atol=2e-5)
  np.testing.assert_allclose(seen['c_noise'], steps, atol=2e-3)
  assert seen['y'] is text


def random_params(module, x, seed: int = 0):
  """Parameters of `module`'s shapes drawn N(0, 0.1^2) on the host, from a trace: initialising the digits preset
  compiles for about 25 s on two CPU cores, and these tests need only non-degenerate values."""
  shapes = jax.eval_shape(lambda key: networks.init_params(module, key, x), jax.random.key(0))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.1 * rng.standard_normal(s.shape), s.dtype), shapes)


def digits_condition(batch: int, tokens: jax.Array, seed: int = 3) -> dict:
  """A text condition for the 'digits' preset: `tokens` [B, L, D], a random pooled caption [B, 64] and the digits'
  size ids (data/digits_text.py's TIME_IDS)."""
  pooled = jax.random.normal(jax.random.key(seed), (batch, 64))
  return {'tokens': tokens, 'pooled': pooled, 'time_ids': jnp.tile(jnp.array([8.0, 8, 0, 0, 8, 8]), (batch, 1))}


@pytest.mark.slow  # The registry-to-U-Net mapping of y also runs in the guidance-embedding test below by default.
def test_the_registry_reads_the_projects_text_condition_names():
  """y = {'tokens', 'pooled', 'time_ids'} (conditions.py) reaches diffusers' encoder_hidden_states, text_embeds and
  time_ids: the digits preset (SDXL's text_time embedding, as sdxl_base) through the registry equals the SDUNet
  called directly, its output moves with the pooled caption, and pooled is required, as SDXL's is."""
  config = networks.network_defaults('sd_unet')
  config.update(preset='digits', cross_attention_dim=16)
  module = networks.build_network(config, num_classes=0)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
  params = random_params(module, x)
  y = digits_condition(2, jax.random.normal(jax.random.key(2), (2, 5, 16)))
  t = jnp.array([3.0, 700.0])
  apply = jax.jit(networks.make_apply(module))
  got = apply(params, x, t, None, y)
  direct = sd_unet.from_config('digits', cross_attention_dim=16)
  added = {'text_embeds': y['pooled'], 'time_ids': y['time_ids']}
  np.testing.assert_array_equal(got, jax.jit(direct.apply)({'params': params}, x, t, y['tokens'], added))
  other = apply(params, x, t, None, dict(y, pooled=y['pooled'][::-1]))
  assert float(jnp.max(jnp.abs(other - got))) > 1e-3  # The pooled caption reaches every block's time embedding.
  with pytest.raises(KeyError, match='pooled'):
    jax.eval_shape(networks.make_apply(module), params, x, t, None, {'tokens': y['tokens']})
  xl = networks.build_network(networks.network_defaults('sd_unet').copy_and_resolve_references(), num_classes=0)
  xl = xl.clone(preset='sdxl_base')
  shapes = jax.eval_shape(lambda key: networks.init_params(xl, key, jax.ShapeDtypeStruct((1, 8, 8, 4), jnp.float32)),
                          jax.random.key(0))
  text = {'tokens': jax.ShapeDtypeStruct((1, 77, 2048), jnp.float32),
          'pooled': jax.ShapeDtypeStruct((1, 1280), jnp.float32), 'time_ids': jax.ShapeDtypeStruct((1, 6), jnp.float32)}
  assert jax.eval_shape(networks.make_apply(xl), shapes, x[:1, ..., :1].repeat(4, -1), t[:1], None, text).shape == (1, 8, 8, 4)
  with pytest.raises(KeyError, match='pooled'):
    jax.eval_shape(networks.make_apply(xl), shapes, x[:1, ..., :1].repeat(4, -1), t[:1], None, {'tokens': text['tokens']})


# The import command (tools/import_checkpoint.py) on a diffusers pipeline of the 'digits' preset: config.json holds
# the preset's keys (lists, as JSON has them), the scheduler SD's training schedule.
DIGITS_CONFIG = json.loads(json.dumps(sd_unet.PRESETS['digits']))
SD_SCHEDULER = dict(_class_name='PNDMScheduler', beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012,
                    num_train_timesteps=1000, prediction_type='epsilon', skip_prk_steps=True)


def digits_pipeline(root, config=DIGITS_CONFIG, scheduler=SD_SCHEDULER, cross_attention_dim=None,
                    time_cond_proj_dim=None) -> tuple:
  """(pipeline folder, state dict): random weights of the digits preset in diffusers' layout, its config.json, and
  `scheduler` as scheduler/scheduler_config.json (None: no scheduler folder); time_cond_proj_dim makes it an LCM
  U-Net (its guidance-scale embedding's cond_proj)."""
  widths = {'cross_attention_dim': cross_attention_dim} if cross_attention_dim else {}
  if time_cond_proj_dim:
    widths['time_cond_proj_dim'] = time_cond_proj_dim
  state_dict = sd_unet.random_weights(sd_unet.from_config('digits', **widths))
  folder = write_unet_folder(root, dict(config, **widths), state_dict)
  if scheduler is not None:
    os.makedirs(root / 'scheduler')
    (root / 'scheduler' / 'scheduler_config.json').write_text(json.dumps(scheduler))
  return folder, state_dict


def test_an_imported_pipeline_opens_as_a_teacher_that_predicts_the_unets_epsilon(tmp_path):
  src, state_dict = digits_pipeline(tmp_path / 'pipeline')
  out = str(tmp_path / 'teacher')
  result = run_main([f'--src={src}', f'--out={out}'], module='fewstep_jax.tools.import_checkpoint')
  unet = sd_unet.from_config('digits')
  scheduler = os.path.join(src, 'scheduler', 'scheduler_config.json')
  assert result.stdout.splitlines() == [
      f"{src}: network 'sd_unet' (preset 'digits'), {sd_unet.parameter_count(unet):,} parameters, data shape "
      f"(8, 8, 1), 0 classes, readout 'sd' -> {out}",
      f"readout 'sd' from {scheduler} (prediction_type 'epsilon')",
      f'use it as --config.method.teacher={out} (or start a student from it: --config.method.init_from={out})']
  teacher = runs.open_teacher(out)
  assert teacher.network.to_dict() == {'name': 'sd_unet', 'preset': 'digits', 'cross_attention_dim': 0,
                                       'time_scale': 1.0, 'two_times': False, 'guidance_embedding': 0,
                                       'attention': 'xla', 'remat': 'none'}
  assert (teacher.data_shape, teacher.num_classes, teacher.readout.name) == ((8, 8, 1), 0, 'sd')
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.standard_normal((2, 8, 8, 1)), jnp.float32)
  sigma = jnp.array([0.5, 6.0])
  y = digits_condition(2, jnp.asarray(rng.standard_normal((2, 3, 64)), jnp.float32))

  def both(teacher_params, params):  # One compilation (eager dispatch of a U-Net is slower on CPU).
    x_vp, timesteps = paths.sd_network_input(x, sigma)  # SD's input: the variance-preserving latent, its timestep.
    added = {'text_embeds': y['pooled'], 'time_ids': y['time_ids']}
    return (teacher.model()(teacher_params, x, sigma, None, y),
            unet.apply({'params': params}, x_vp, timesteps, y['tokens'], added))

  eps, direct = jax.jit(both)(teacher.params, sd_unet.from_state_dict(state_dict, unet))
  np.testing.assert_allclose(eps, direct, rtol=1e-5, atol=1e-6)


def test_the_readout_is_the_schedulers_prediction_else_the_presets_else_the_flag(tmp_path):
  v_scheduler = dict(SD_SCHEDULER, prediction_type='v_prediction')
  src, _ = digits_pipeline(tmp_path / 'v', scheduler=v_scheduler, cross_attention_dim=16)
  imported = import_checkpoint.read_diffusers_unet(os.path.join(src, 'unet'))  # Its pipeline's scheduler, above.
  network = imported.network
  assert (imported.readout.name, network.preset, network.cross_attention_dim) == ('sd_v', 'digits', 16)
  assert "prediction_type 'v_prediction'" in imported.readout_from
  assert import_checkpoint.read_diffusers_unet(src, readout='sd').readout.name == 'sd'
  bare, _ = digits_pipeline(tmp_path / 'bare', scheduler=None)
  imported = import_checkpoint.read_diffusers_unet(bare)
  assert imported.readout.name == 'sd' and imported.readout_from.startswith("the preset 'digits': no ")
  assert (imported.network.cross_attention_dim, imported.data_shape) == (0, (8, 8, 1))


@pytest.mark.parametrize('case, words', [
    pytest.param('other_config', r"config\.json is the config of none of the SD U-Net presets \(sd15, sd21_v, "
                 r"sdxl_base, digits, sd15_tiny, sdxl_tiny\): it differs from the closest, 'digits', first in layers_per_block \(2 there, 1 "
                 r'in the preset\)', id='other_config'),
    pytest.param('other_schedule', r"scheduler_config\.json: beta_schedule='linear', but the readouts sd and sd_v read "
                 r"SD's training schedule \(beta_schedule='scaled_linear', beta_start=0\.00085", id='other_schedule'),
    pytest.param('no_unet', r'holds no U-Net weights: .* pass a downloaded diffusers pipeline folder \(with unet/\)',
                 id='no_unet'),
])
def test_a_pipeline_the_import_cannot_read_is_one_error_line_and_writes_nothing(case, words, tmp_path):
  root = tmp_path / 'pipeline'
  if case == 'no_unet':
    os.makedirs(root / 'text_encoder')
  else:
    config = dict(DIGITS_CONFIG, layers_per_block=2) if case == 'other_config' else DIGITS_CONFIG
    scheduler = dict(SD_SCHEDULER, beta_schedule='linear') if case == 'other_schedule' else SD_SCHEDULER
    digits_pipeline(root, config=config, scheduler=scheduler)
  out = tmp_path / 'teacher'
  result = run_main([f'--src={root}', f'--out={out}'], module='fewstep_jax.tools.import_checkpoint', check=False)
  assert re.search(words, error_line(result)), error_line(result)
  assert not out.exists()


def test_two_times_feed_r_through_the_time_embeddings_cond_proj():
  """network.two_times: r's sinusoidal features enter through cond_proj (LCM's guidance input), so the parameters
  are the published layout's plus cond_proj, the output depends on r, and r is required exactly then."""
  config = networks.network_defaults('sd_unet')
  config.update(preset='digits', two_times=True, time_scale=250.0)
  module = networks.build_network(config, num_classes=0)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
  params = random_params(module, x)
  assert params['time_embedding']['cond_proj']['weight'].shape == (32, 32)  # sinusoid(r) -> sinusoid(t)'s width
  single = jax.eval_shape(lambda key: networks.init_params(module.clone(two_times=False), key, x), jax.random.key(0))
  assert 'cond_proj' not in single['time_embedding']
  apply = jax.jit(networks.make_apply(module))
  text = digits_condition(2, jnp.ones((2, 5, 64)))
  t = jnp.array([0.3, -0.4])
  a, b = apply(params, x, t, jnp.array([0.1, 0.1]), text), apply(params, x, t, jnp.array([0.2, -0.2]), text)
  assert float(jnp.max(jnp.abs(a - b))) > 1e-4
  with pytest.raises(ValueError, match='takes a second time r exactly when network.two_times is set'):
    apply(params, x, t, None, text)


# diffusers' LatentConsistencyModelPipeline.get_guidance_scale_embedding(torch.tensor([7.5]), embedding_dim=8)
# (diffusers 0.42.1, torch 2.13.0 CPU).
DIFFUSERS_GUIDANCE_EMBEDDING = [-0.85123587, 0.5626711, -0.43523303, 0.6816387, -0.52478325, -0.82668084,
                                -0.90031785, 0.7316889]


def test_lcms_guidance_embedding_is_diffusers_and_feeds_an_imported_lcm_unet(tmp_path):
  """sd_unet.guidance_scale_embedding is diffusers' (recorded) and the formula in float64 to the float32 rounding of
  its phases (1000 w rad); an LCM U-Net (config.json with time_cond_proj_dim) imports with
  network.guidance_embedding, whose registry network reads y['guidance'] as diffusers' pipeline passes w."""
  np.testing.assert_allclose(sd_unet.guidance_scale_embedding(jnp.array([7.5]), 8)[0], DIFFUSERS_GUIDANCE_EMBEDDING,
                             atol=2e-6)
  w = np.array([0.0, 3.5, 14.0])
  half = 128
  phases = 1000 * w[:, None] * np.exp(-np.log(10000.0) * np.arange(half) / (half - 1))[None, :]
  np.testing.assert_allclose(sd_unet.guidance_scale_embedding(jnp.asarray(w), 2 * half),
                             np.concatenate([np.sin(phases), np.cos(phases)], axis=1), atol=3e-3)
  assert sd_unet.guidance_scale_embedding(jnp.array([1.0]), 7).shape == (1, 7)  # Odd widths pad one zero.

  src, state_dict = digits_pipeline(tmp_path / 'lcm', time_cond_proj_dim=8)
  imported = import_checkpoint.read_diffusers_unet(src)
  assert imported.network.guidance_embedding == 8
  module = networks.build_network(imported.network, num_classes=0)
  unet = sd_unet.from_config('digits', time_cond_proj_dim=8)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
  y = digits_condition(2, jax.random.normal(jax.random.key(2), (2, 3, 64)))

  def outputs(params, guidance):
    added = {'text_embeds': y['pooled'], 'time_ids': y['time_ids']}
    t = jnp.array([500.0, 20.0])
    return (networks.make_apply(module)(params, x, t, None, {**y, 'guidance': guidance}),
            unet.apply({'params': params}, x, t, y['tokens'], added, sd_unet.guidance_scale_embedding(guidance, 8)))

  registry, direct = jax.jit(outputs)(imported.params, jnp.array([7.0, 7.0]))
  np.testing.assert_allclose(registry, direct, rtol=1e-5, atol=1e-6)
  other, _ = jax.jit(outputs)(imported.params, jnp.array([2.0, 2.0]))
  assert float(jnp.max(jnp.abs(other - registry))) > 1e-4
  with pytest.raises(ValueError, match=r"needs y\['guidance'\]"):
    networks.make_apply(module)(imported.params, x, jnp.array([500.0, 20.0]), None, y)
