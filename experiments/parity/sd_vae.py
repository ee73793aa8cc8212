"""The SD-VAE in JAX against diffusers' AutoencoderKL, on random weights.

  python experiments/parity/sd_vae.py

diffusers (not a dependency of the project; it needs torch) builds an AutoencoderKL at a small size with random
weights; its state dict is saved as safetensors (as diffusers' diffusion_pytorch_model.safetensors) and, with the
middle attention renamed to the deprecated names the published SD-VAE files use (query, key, value, proj_attn),
as a torch.save file; both are loaded with `fewstep_jax.nn.sd_vae.load`. The posterior mean and std of the encoder
and the decoder's images are compared. It also prints the parameter count of the published SD VAE (diffusers'
default AutoencoderKL with the SD config) against the port's (`jax.eval_shape`). One JSON line per check.
"""
import json
import os
import tempfile

import numpy as np


def main():
  import torch
  from diffusers import AutoencoderKL
  from safetensors.torch import save_file

  import jax
  import jax.numpy as jnp
  from fewstep_jax.nn import sd_vae

  jax.config.update('jax_default_matmul_precision', 'highest')
  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  small = dict(block_out_channels=(32, 64, 64), layers_per_block=1, latent_channels=4, norm_num_groups=8)
  blocks = len(small['block_out_channels'])
  net = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=('DownEncoderBlock2D',) * blocks,
                      up_block_types=('UpDecoderBlock2D',) * blocks, **small).eval()
  with torch.no_grad():
    for tensor in net.parameters():
      tensor.add_(torch.randn_like(tensor) * 0.05)
  vae = sd_vae.SDVAE(**small)
  images = rng.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
  latents = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
  with torch.no_grad():
    posterior = net.encode(torch.as_tensor(images)).latent_dist
    want_mean, want_std = posterior.mean.numpy(), posterior.std.numpy()
    want_images = net.decode(torch.as_tensor(latents)).sample.numpy()
  state_dict = {k: v.contiguous() for k, v in net.state_dict().items()}
  deprecated = {}
  for key, value in state_dict.items():
    for new, old in (('to_q', 'query'), ('to_k', 'key'), ('to_v', 'value'), ('to_out.0', 'proj_attn')):
      key = key.replace(f'.attentions.0.{new}.', f'.attentions.0.{old}.')
    deprecated[key] = value
  with tempfile.TemporaryDirectory() as tmp:
    files = {'safetensors': os.path.join(tmp, 'diffusion_pytorch_model.safetensors'),
             'deprecated_names_bin': os.path.join(tmp, 'diffusion_pytorch_model.bin')}
    save_file(state_dict, files['safetensors'])
    torch.save(deprecated, files['deprecated_names_bin'])
    for name, path in files.items():
      _, params = sd_vae.load(path, vae)
      mean, std = vae.apply({'params': params}, jnp.asarray(images.transpose(0, 2, 3, 1)), method=vae.encode)
      decoded = vae.apply({'params': params}, jnp.asarray(latents.transpose(0, 2, 3, 1)), method=vae.decode)
      rel = lambda got, want: float(np.abs(np.asarray(got).transpose(0, 3, 1, 2) - want).max() / np.abs(want).max())
      print(json.dumps({'file': name, 'mean_max_relative_error': rel(mean, want_mean),
                        'std_max_relative_error': rel(std, want_std),
                        'decoded_max_relative_error': rel(decoded, want_images)}), flush=True)

  published = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=('DownEncoderBlock2D',) * 4,
                            up_block_types=('UpDecoderBlock2D',) * 4, block_out_channels=(128, 256, 512, 512),
                            layers_per_block=2, latent_channels=4, norm_num_groups=32)
  theirs = sum(p.numel() for p in published.parameters())
  ours = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(sd_vae.abstract_params(sd_vae.SDVAE())))
  print(json.dumps({'published': 'sd-vae-ft-mse', 'diffusers_parameters': theirs, 'port_parameters': ours,
                    'equal': ours == theirs}), flush=True)


if __name__ == '__main__':
  main()
