"""DiT in JAX against DiT's own PyTorch code, on random weights, through the project's importer.

  python experiments/parity/dit.py --reference=DIT_CHECKOUT

DIT_CHECKOUT is a clone of https://github.com/facebookresearch/DiT (not a dependency; it needs torch and timm). DiT's
network is SiT's (experiments/parity/sit.py checks the transformer); what differs is the reading: an epsilon
prediction (the first C of 2C output channels) at DDPM's integer timesteps of the linear schedule. The script checks
that the project's schedule equals DiT's `GaussianDiffusion.alphas_cumprod`, then builds DiT's `DiT` at a small size
with random weights, imports its training checkpoint with `fewstep_jax.tools.import_checkpoint --arch=DiT`, and compares the
project's `dit` readout eps(x_sigma, sigma_j) with DiT(x_sigma / sqrt(1 + sigma_j^2), j)[:, :C] at timesteps j from
0 to 999, with labels and with the null label. One JSON line per check.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--reference', required=True, help='a checkout of facebookresearch/DiT')
  parser.add_argument('--batch', type=int, default=4)
  args = parser.parse_args()
  sys.path.insert(0, os.path.abspath(args.reference))
  import torch
  import models  # DiT's code, from the checkout.
  from diffusion import create_diffusion

  import jax
  import jax.numpy as jnp
  from fewstep_jax import nn, paths
  from fewstep_jax.tools import import_checkpoint as import_weights

  jax.config.update('jax_default_matmul_precision', 'highest')
  alphas_cumprod = create_diffusion(timestep_respacing='').alphas_cumprod
  ours = 1.0 / (1.0 + paths.ddpm_linear_sigmas() ** 2)
  print(json.dumps({'check': 'schedule', 'max_abs_difference': float(np.abs(ours - alphas_cumprod).max())}))

  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  size, channels, classes = 16, 4, 10
  fields = dict(depth=2, hidden_size=96, patch_size=2, num_heads=4)
  net = models.DiT(input_size=size, in_channels=channels, num_classes=classes, **fields).eval()
  with torch.no_grad():
    for name, tensor in net.named_parameters():
      if name != 'pos_embed':
        tensor.copy_(torch.randn_like(tensor) * (0.05 if tensor.ndim > 1 else 0.2))
  with tempfile.TemporaryDirectory() as tmp:
    pt = os.path.join(tmp, 'checkpoint.pt')
    torch.save({'model': net.state_dict(), 'ema': net.state_dict(), 'opt': {}, 'args': argparse.Namespace()}, pt)
    imported = import_weights.read_state_dict_file(pt, 'DiT', fields=fields)
  module = nn.build_network(imported.network, num_classes=imported.num_classes)
  eps = jax.jit(imported.readout.model(nn.make_apply(module)))
  sigmas = paths.ddpm_linear_sigmas()
  worst = 0.0
  for step in (0, 1, 250, 500, 999):
    sigma = np.float32(sigmas[step])
    x_sigma = rng.standard_normal((args.batch, channels, size, size)).astype(np.float32) * np.sqrt(1 + sigma ** 2)
    labels = rng.integers(0, classes, args.batch)
    for conditional in (True, False):
      y = labels if conditional else np.full(args.batch, classes)
      with torch.no_grad():
        x_vp = torch.as_tensor(x_sigma / np.sqrt(1 + np.float64(sigma) ** 2), dtype=torch.float32)
        want = net(x_vp, torch.full((args.batch,), float(step)), torch.as_tensor(y))[:, :channels].numpy()
      got = np.asarray(eps(imported.params, jnp.asarray(x_sigma.transpose(0, 2, 3, 1)), jnp.float32(sigma), None,
                           jnp.asarray(labels) if conditional else None)).transpose(0, 3, 1, 2)
      worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
  print(json.dumps({'architecture': 'dit', 'readout': imported.readout.name, 'max_relative_error': worst,
                    'timesteps': [0, 1, 250, 500, 999]}), flush=True)
  theirs = sum(p.numel() for p in models.DiT_models['DiT-XL/2'](input_size=32, num_classes=1000).parameters())
  class_name, preset_fields = import_weights.PRESETS['dit_xl_2']
  count = import_weights.parameter_count(import_weights.network_config(class_name, preset_fields), (32, 32, 4), 1000)
  print(json.dumps({'published': 'DiT-XL/2', 'dit_parameters': theirs, 'port_parameters': count,
                    'equal': theirs == count}), flush=True)


if __name__ == '__main__':
  main()
