"""The SD U-Net in JAX against diffusers' UNet2DConditionModel, on random weights.

  python experiments/parity/sd_unet.py [--configs=tiny,tiny_xl,sd15_reduced,sdxl_reduced,sd21_v_reduced,sd15]
                                       [--record]

diffusers (not a dependency of the project; it needs torch) builds a UNet2DConditionModel from each config with the
random weights of `sd_unet.random_weights`, computes its output on CPU in float32, and writes itself in the published
layout with `save_pretrained` (unet/config.json and unet/diffusion_pytorch_model.safetensors; for the tiny configs
also the .bin of torch.save and the fp16 variant `diffusion_pytorch_model.fp16.safetensors`, whose weights are
float16-exact there). `fewstep_jax.nn.sd_unet.load` reads the folder, config.json included, and the outputs on the
same latents, timesteps, text tokens and (SDXL) pooled embedding and time ids are compared: max |jax - torch| /
max |torch|, one JSON line per check, non-zero exit above --tolerance.

Full SDXL (10 GB per framework) does not fit beside its reference on a 24 GB machine, so the default checks are at
reduced width: `sdxl_reduced` is SDXL's config with the widths cut to (64, 128, 256) and heads to (1, 2, 4), so
64-channel heads as in SDXL, and everything else kept (DownBlock2D first, transformer depths 1 / 2 / 10, linear
projections, 2048-wide tokens, the text_time embedding of 1280 + 6 x 256 features); `sd15_reduced` and
`sd21_v_reduced` are SD 1.5's and SD 2.1's configs cut to (64, 128, 256, 256). `sd15`, SD 1.5 at full size (3.4 GB
per framework, 10 GB peak), runs when named. The published sizes are checked by parameter count: diffusers' model
built on the meta device against the port's jax.eval_shape, for sd15, sd21_v and sdxl_base. The readouts 'sd' and
'sd_v' are checked against diffusers' DDPMScheduler (scaled_linear): alphas_cumprod, and eps read back from the
exact network's output (the scheduler's eps or get_velocity at its add_noise sample).

--record writes tests/data/sd_unet_golden.npz: the tiny configs' weights, inputs and diffusers' outputs, which
tests/test_sd_unet.py compares against without torch.

Measured (diffusers 0.42.1, torch 2.13.0+cpu, jax 0.10.2, CPU, batch 2; 32 x 32 latents and 77 tokens, the tiny
configs 16 x 16 and 7), max relative error:
  tiny            safetensors 9.6e-07, bin 9.6e-07, fp16 variant 9.6e-07
  tiny_xl         safetensors 1.0e-06, bin 1.0e-06, fp16 variant 1.0e-06
  sd15_reduced    safetensors 2.1e-06
  sdxl_reduced    safetensors 4.1e-06
  sd21_v_reduced  safetensors 1.9e-06
  sd15 (full)     safetensors 3.6e-06
  readouts        alphas_cumprod 4.7e-07 (diffusers' are float32), sd eps 0, sd_v eps 1.9e-06
  parameters      sd15 859,520,964, sd21_v 865,910,724, sdxl_base 2,567,463,684: diffusers' and the port's equal.
"""
import argparse
import gc
import json
import os
import sys
import tempfile

import numpy as np

# Two tiny networks for the golden file (small enough that their float16 weights fit in it): one of SD 1.5's
# structure (1x1-conv projections, one head count) and one of SDXL's (DownBlock2D first, linear projections, two
# transformer blocks, the text_time embedding), which also has LCM's time_cond_proj_dim.
TINY = dict(block_out_channels=(8, 16), down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
            up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), layers_per_block=1, attention_head_dim=2,
            cross_attention_dim=12, norm_num_groups=4)
TINY_XL = dict(block_out_channels=(4, 8, 8),
               down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'),
               up_block_types=('CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'), layers_per_block=1,
               transformer_layers_per_block=(1, 2, 2), attention_head_dim=(1, 2, 2), cross_attention_dim=12,
               use_linear_projection=True, addition_embed_type='text_time', addition_time_embed_dim=4,
               projection_class_embeddings_input_dim=8 + 6 * 4, time_cond_proj_dim=4, norm_num_groups=4)
_REDUCED_XL = dict(block_out_channels=(64, 128, 256), attention_head_dim=(1, 2, 4))
# name -> (config: a preset name or a dict, changes to it, latent size, text tokens).
CONFIGS = {
    'tiny': (TINY, {}, 16, 7),
    'tiny_xl': (TINY_XL, {}, 16, 7),
    'sd15_reduced': ('sd15', dict(block_out_channels=(64, 128, 256, 256)), 32, 77),
    'sdxl_reduced': ('sdxl_base', _REDUCED_XL, 32, 77),
    'sd21_v_reduced': ('sd21_v', dict(block_out_channels=(64, 128, 256, 256), attention_head_dim=(1, 2, 4, 4)), 32,
                       77),
    'sd15': ('sd15', {}, 32, 77),
}
# The default checks: sd15 at full size (3.4 GB per framework) runs when named.
DEFAULT_CONFIGS = ('tiny', 'tiny_xl', 'sd15_reduced', 'sdxl_reduced', 'sd21_v_reduced')
# Published U-Nets and their parameter counts (diffusers' UNet2DConditionModel with their config.json).
PUBLISHED = {'sd15': 859_520_964, 'sdxl_base': 2_567_463_684, 'sd21_v': None}
GOLDEN_CONFIGS = ('tiny', 'tiny_xl')
GOLDEN_SEED = 0


def inputs(unet, rng, size: int, batch: int = 2, tokens: int = 77) -> dict:
  """Latents NCHW (diffusers' layout), DDPM timesteps, text tokens, and the added conditions the config takes."""
  x = {'latents': rng.standard_normal((batch, unet.in_channels, size, size)).astype(np.float32),
       'timesteps': np.array([981.0, 37.5][:batch], np.float32),
       'encoder_hidden_states': rng.standard_normal((batch, tokens, unet.cross_attention_dim)).astype(np.float32)}
  if unet.addition_embed_type:
    from fewstep_jax.nn import sd_unet
    width = unet.projection_class_embeddings_input_dim - sd_unet.SDXL_TIME_IDS * unet.addition_time_embed_dim
    x['text_embeds'] = rng.standard_normal((batch, width)).astype(np.float32)
    x['time_ids'] = np.array([[1024, 1024, 0, 0, 1024, 1024], [768, 1344, 64, 0, 1024, 1024]][:batch], np.float32)
  if unet.time_cond_proj_dim:
    x['timestep_cond'] = rng.standard_normal((batch, unet.time_cond_proj_dim)).astype(np.float32)
  return x


def torch_output(net, x: dict) -> np.ndarray:
  import torch
  t = {k: torch.from_numpy(v) for k, v in x.items()}
  added = {k: t[k] for k in ('text_embeds', 'time_ids') if k in t} or None
  with torch.no_grad():
    return net(t['latents'], t['timesteps'], t['encoder_hidden_states'], timestep_cond=t.get('timestep_cond'),
               added_cond_kwargs=added).sample.numpy()


def jax_output(unet, params, x: dict) -> np.ndarray:
  import jax
  added = {k: x[k] for k in ('text_embeds', 'time_ids')} if 'time_ids' in x else None
  fn = jax.jit(lambda p, latents, t, tokens, added, cond: unet.apply({'params': p}, latents, t, tokens, added, cond))
  out = fn(params, x['latents'].transpose(0, 2, 3, 1), x['timesteps'], x['encoder_hidden_states'], added,
           x.get('timestep_cond'))
  return np.asarray(out).transpose(0, 3, 1, 2)


def diffusers_config(config: dict) -> dict:
  return {key: list(value) if isinstance(value, tuple) else value for key, value in config.items()}


def reference_net(config: dict, state_dict: dict):
  """diffusers' network of `config` holding `state_dict` (built on the meta device, then given the arrays)."""
  import torch
  from diffusers import UNet2DConditionModel
  with torch.device('meta'):
    net = UNet2DConditionModel(**diffusers_config(config))
  net.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True, assign=True)
  return net.eval()


def relative(got, want) -> float:
  return float(np.abs(got - want).max() / np.abs(want).max())


def pack(state_dict: dict) -> dict:
  """A state dict as two arrays, its float16 values end to end in the order of the sorted names and a JSON list of
  [name, shape] (bytes, not numpy's 4-byte characters): one zip entry each, where an entry per weight would cost more
  in headers than the weights do."""
  names = sorted(state_dict)
  return {'weights': np.concatenate([state_dict[key].astype(np.float16).ravel() for key in names]),
          'weight_shapes': np.bytes_(json.dumps([[key, list(state_dict[key].shape)] for key in names]))}


def compare(name: str, all_files: bool, golden: dict):
  from fewstep_jax.nn import sd_unet
  base, overrides, size, tokens = CONFIGS[name]
  config = dict(sd_unet.PRESETS[base] if isinstance(base, str) else base, **overrides)
  unet = sd_unet.from_config(config)
  state_dict = sd_unet.random_weights(unet, GOLDEN_SEED)
  if name in GOLDEN_CONFIGS:  # Weights exact in float16: the golden file stores them at half the size.
    state_dict = {key: value.astype(np.float16).astype(np.float32) for key, value in state_dict.items()}
  x = inputs(unet, np.random.default_rng(1), size, tokens=tokens)
  net = reference_net(config, state_dict)
  want = torch_output(net, x)
  if name in golden:
    golden[name] = dict(x, output=want, config=np.bytes_(json.dumps(diffusers_config(config))), **pack(state_dict))
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    folders = {'safetensors': os.path.join(tmp, 'safetensors')}
    net.save_pretrained(os.path.join(folders['safetensors'], 'unet'))
    references = {'safetensors': want}
    if all_files:
      folders['bin'], references['bin'] = os.path.join(tmp, 'bin'), want
      net.save_pretrained(os.path.join(folders['bin'], 'unet'), safe_serialization=False)
      folders['fp16_variant'] = os.path.join(tmp, 'fp16')
      net.half().save_pretrained(os.path.join(folders['fp16_variant'], 'unet'), variant='fp16')
      references['fp16_variant'] = torch_output(net.float(), x)  # The weights rounded to float16, run in float32.
    del net, state_dict
    gc.collect()
    for kind, folder in folders.items():
      loaded, params = sd_unet.load(folder)
      assert loaded == unet, (loaded, unet)
      results[kind] = relative(jax_output(unet, params, x), references[kind])
      del params
      gc.collect()
  print(json.dumps({'config': name, 'latents': list(x['latents'].shape),
                    **{f'{kind}_max_relative_error': value for kind, value in results.items()}}), flush=True)
  return max(results.values())


def parameter_counts():
  import torch
  from diffusers import UNet2DConditionModel
  from fewstep_jax.nn import sd_unet
  equal = True
  for name, expected in PUBLISHED.items():
    with torch.device('meta'):
      theirs = sum(p.numel() for p in UNet2DConditionModel(**diffusers_config(sd_unet.PRESETS[name])).parameters())
    ours = sd_unet.parameter_count(sd_unet.from_config(name))
    equal &= theirs == ours and expected in (None, ours)
    print(json.dumps({'published': name, 'diffusers_parameters': theirs, 'port_parameters': ours,
                      'expected': expected, 'equal': theirs == ours and expected in (None, ours)}), flush=True)
  return equal


def schedule_checks() -> float:
  """The 'sd' and 'sd_v' readouts against diffusers' DDPMScheduler of SD (scaled_linear, 0.00085 to 0.012): its
  alphas_cumprod, and eps read back from the exact network, which returns diffusers' eps or its get_velocity at the
  readout's input (the scheduler's add_noise of the same x0 and eps). Returns the worst relative error."""
  import torch
  from diffusers import DDPMScheduler
  from fewstep_jax import paths
  scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear')
  sigmas = paths.ddpm_scaled_linear_sigmas()
  worst = relative(1.0 / (1.0 + sigmas**2), scheduler.alphas_cumprod.double().numpy())
  print(json.dumps({'check': 'sd_schedule', 'alphas_cumprod_max_relative_error': worst}), flush=True)
  rng = np.random.default_rng(2)
  x0, eps = rng.standard_normal((2, 4, 4, 8, 8)).astype(np.float32)
  steps = np.array([0, 37, 500, 999])
  x0_t, eps_t, steps_t = torch.from_numpy(x0), torch.from_numpy(eps), torch.from_numpy(steps)
  x_vp = scheduler.add_noise(x0_t, eps_t, steps_t).numpy()
  outputs = {'sd': eps, 'sd_v': scheduler.get_velocity(x0_t, eps_t, steps_t).numpy()}
  for name, output in outputs.items():
    raw = lambda params, x, c_noise, r, y, key: output
    sigma = sigmas[steps].astype(np.float32)
    got = np.asarray(paths.readout(name).model(raw)(None, x0 + sigma[:, None, None, None] * eps, sigma))
    inputs_error = relative(np.asarray(paths.sd_network_input(x0 + sigma[:, None, None, None] * eps, sigma)[0]), x_vp)
    errors_ = {'eps_max_relative_error': relative(got, eps), 'network_input_max_relative_error': inputs_error}
    print(json.dumps({'check': f'{name}_readout', **errors_}), flush=True)
    worst = max(worst, *errors_.values())
  return worst


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--configs', default=','.join(DEFAULT_CONFIGS), help=f'any of {", ".join(CONFIGS)}')
  parser.add_argument('--tolerance', type=float, default=1e-5)
  parser.add_argument('--record', action='store_true', help='write tests/data/sd_unet_golden.npz (tiny configs)')
  args = parser.parse_args()
  import diffusers
  import jax
  import torch
  jax.config.update('jax_default_matmul_precision', 'highest')
  torch.manual_seed(0)
  print(f'diffusers {diffusers.__version__}, torch {torch.__version__}, jax {jax.__version__}', flush=True)
  names = args.configs.split(',')
  if args.record:
    names = list(dict.fromkeys(list(GOLDEN_CONFIGS) + names))
  golden = {name: None for name in GOLDEN_CONFIGS if args.record}
  worst = max(compare(name, name in GOLDEN_CONFIGS, golden) for name in names)
  worst = max(worst, schedule_checks())
  counts_equal = parameter_counts()
  if args.record:
    path = os.path.join(os.path.dirname(__file__), '..', '..', 'tests', 'data', 'sd_unet_golden.npz')
    arrays = {f'{name}__{key}': value for name, entry in golden.items() for key, value in entry.items()}
    np.savez_compressed(os.path.normpath(path), **arrays)
    print(f'golden outputs written to {os.path.normpath(path)}')
  print(f'worst {worst:.2e} (tolerance {args.tolerance:g}); parameter counts equal: {counts_equal}')
  sys.exit(0 if worst <= args.tolerance and counts_equal else 1)


if __name__ == '__main__':
  main()
