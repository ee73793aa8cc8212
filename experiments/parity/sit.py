"""SiT in JAX against SiT's own PyTorch code, on random weights, through the project's importer.

  python experiments/parity/sit.py --reference=SIT_CHECKOUT

SIT_CHECKOUT is a clone of https://github.com/willisma/SiT (not a dependency of the project; it needs torch and
timm). The script builds SiT's `SiT` at a small size with random weights (every parameter redrawn, including the
zero-initialised adaLN and output layers; the fixed position table kept, and compared with the port's own), saves
its state dict as SiT's train.py saves checkpoints ({'model', 'ema', 'opt', 'args'}), imports it with
`fewstep_jax.tools.import_checkpoint`, and compares the project's flow velocity through the `sit` readout, v(z, t), with
-SiT(z, 1 - t, y) over t from 0.02 to 0.98, with labels and with the null label. It also prints the parameter
counts of the published sizes at ImageNet-256 latents (32 x 32 x 4, 1000 classes), SiT's against the port's
(`jax.eval_shape`). One JSON line per check.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--reference', required=True, help='a checkout of willisma/SiT')
  parser.add_argument('--batch', type=int, default=4)
  args = parser.parse_args()
  sys.path.insert(0, os.path.abspath(args.reference))
  import torch
  import models  # SiT's code, from the checkout.

  import jax
  import jax.numpy as jnp
  from fewstep_jax import nn
  from fewstep_jax.tools import import_checkpoint as import_weights
  from fewstep_jax.nn import sit

  jax.config.update('jax_default_matmul_precision', 'highest')
  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  size, channels, classes = 16, 4, 10
  fields = dict(depth=2, hidden_size=96, patch_size=2, num_heads=4)
  net = models.SiT(input_size=size, in_channels=channels, num_classes=classes, **fields).eval()
  table_error = float(np.abs(sit.sincos_pos_embed(96, size // 2) - net.pos_embed[0].detach().numpy()).max())
  with torch.no_grad():
    for name, tensor in net.named_parameters():
      if name != 'pos_embed':
        tensor.copy_(torch.randn_like(tensor) * (0.05 if tensor.ndim > 1 else 0.2))
  with tempfile.TemporaryDirectory() as tmp:
    pt = os.path.join(tmp, 'checkpoint.pt')
    torch.save({'model': net.state_dict(), 'ema': net.state_dict(), 'opt': {}, 'args': argparse.Namespace(a=1)}, pt)
    imported = import_weights.read_state_dict_file(pt, 'SiT', fields=fields)
  module = nn.build_network(imported.network, num_classes=imported.num_classes)
  velocity = jax.jit(imported.readout.model(nn.make_apply(module)))
  worst = 0.0
  for t in (0.02, 0.3, 0.5, 0.7, 0.98):
    x = rng.standard_normal((args.batch, channels, size, size)).astype(np.float32)
    labels = rng.integers(0, classes, args.batch)
    for conditional in (True, False):
      y = labels if conditional else np.full(args.batch, classes)
      with torch.no_grad():
        want = -net(torch.as_tensor(x), torch.full((args.batch,), 1 - t), torch.as_tensor(y)).numpy()
      got = np.asarray(velocity(imported.params, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.float32(t), None,
                                jnp.asarray(labels) if conditional else None)).transpose(0, 3, 1, 2)
      worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
  print(json.dumps({'architecture': 'sit', 'import': 'training checkpoint (ema)', 'data_shape': imported.data_shape,
                    'num_classes': imported.num_classes, 'max_relative_error': worst,
                    'position_table_max_abs_difference': table_error}), flush=True)

  for name in ('XL/2', 'L/2', 'B/2', 'S/2'):
    net = models.SiT_models[f'SiT-{name}'](input_size=32, in_channels=4, num_classes=1000)
    theirs = sum(p.numel() for p in net.parameters())
    preset = f'sit_{name.lower().replace("/", "_")}'
    class_name, preset_fields = import_weights.PRESETS[preset]
    ours = import_weights.parameter_count(import_weights.network_config(class_name, preset_fields), (32, 32, 4),
                                          1000)
    print(json.dumps({'published': f'SiT-{name}', 'sit_parameters': theirs, 'port_parameters': ours,
                      'equal': ours == theirs}), flush=True)


if __name__ == '__main__':
  main()
