"""EDM's networks in JAX against EDM's own PyTorch code, on random weights, through the project's importer.

  python experiments/parity/edm.py --reference=EDM_CHECKOUT

EDM_CHECKOUT is a clone of https://github.com/NVlabs/edm (not a dependency of the project; it needs torch). For each
architecture (DDPM++, NCSN++, ADM) at a small size, the script builds EDM's `EDMPrecond` with random weights (every
parameter and buffer redrawn, so that no zero-initialised layer hides a mismatch), writes it as EDM writes its
network pickles ({'ema': net, ...} through plain pickle) and as a `torch.save` state dict, imports both with
`fewstep_jax.tools.import_checkpoint` (the pickle by its recorded arguments, the state dict by architecture name), and
compares the denoiser D(x; sigma, labels) with the project's `edm` readout of the imported network, over noise levels
from 0.002 to 80 and conditional and unconditional labels. It also prints the parameter counts of the published
networks, EDM's against the port's (`jax.eval_shape`, nothing materialised). One JSON line per check.
"""
import argparse
import json
import os
import pickle
import sys
import tempfile

import numpy as np

SMALL = {
    'ddpmpp': dict(model_type='SongUNet', model_channels=32, channel_mult=[1, 2, 2], num_blocks=2,
                   attn_resolutions=[8], embedding_type='positional', channel_mult_noise=1, encoder_type='standard',
                   decoder_type='standard', resample_filter=[1, 1], augment_dim=9, dropout=0.13),
    'ncsnpp': dict(model_type='SongUNet', model_channels=32, channel_mult=[1, 2, 2], num_blocks=2,
                   attn_resolutions=[8], embedding_type='fourier', channel_mult_noise=2, encoder_type='residual',
                   decoder_type='standard', resample_filter=[1, 3, 3, 1], augment_dim=9, dropout=0.13),
    'ncsnpp_skip': dict(model_type='SongUNet', model_channels=32, channel_mult=[1, 2], num_blocks=1,
                        attn_resolutions=[8], embedding_type='fourier', channel_mult_noise=2, encoder_type='skip',
                        decoder_type='skip', resample_filter=[1, 3, 3, 1]),
    'adm': dict(model_type='DhariwalUNet', model_channels=64, channel_mult=[1, 2, 2], num_blocks=2,
                attn_resolutions=[8, 4], augment_dim=0, dropout=0.1),
}
# EDM's train.py: --arch=ddpmpp / ncsnpp at CIFAR-10 (channel_mult [2, 2, 2]), --arch=adm at ImageNet-64.
PUBLISHED = {
    'edm_cifar10_ddpmpp': (32, 3, 10, 9, 'SongUNet'),
    'edm_cifar10_ncsnpp': (32, 3, 10, 9, 'SongUNet'),
    'edm_imagenet64_adm': (64, 3, 1000, 0, 'DhariwalUNet'),
}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--reference', required=True, help='a checkout of NVlabs/edm')
  parser.add_argument('--resolution', type=int, default=16)
  parser.add_argument('--batch', type=int, default=4)
  args = parser.parse_args()
  sys.path.insert(0, os.path.abspath(args.reference))
  import torch
  from training import networks  # EDM's code, from the checkout.

  import jax
  import jax.numpy as jnp
  from fewstep_jax import nn
  from fewstep_jax.tools import import_checkpoint as import_weights

  jax.config.update('jax_default_matmul_precision', 'highest')
  torch.manual_seed(0)
  sigmas = np.asarray([0.002, 0.05, 0.5, 2.0, 20.0, 80.0], np.float32)
  rng = np.random.default_rng(0)
  for name, kwargs in SMALL.items():
    label_dim = 10
    net = networks.EDMPrecond(img_resolution=args.resolution, img_channels=3, label_dim=label_dim, **kwargs).eval()
    with torch.no_grad():
      for tensor in list(net.parameters()) + [b for n, b in net.named_buffers() if n.endswith('freqs')]:
        tensor.copy_(torch.randn_like(tensor) * (0.3 if tensor.ndim > 1 else 0.5))
    with tempfile.TemporaryDirectory() as tmp:
      pkl, pt = os.path.join(tmp, 'net.pkl'), os.path.join(tmp, 'net.pt')
      with open(pkl, 'wb') as f:
        pickle.dump(dict(ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs={}), f)
      torch.save(net.state_dict(), pt)
      from_pickle = import_weights.read_nvlabs_pickle(pkl)
      fields = {k: v for k, v in kwargs.items() if k != 'model_type'}
      from_state_dict = import_weights.read_state_dict_file(pt, kwargs['model_type'], fields=fields)
    for source, imported in (('pickle', from_pickle), ('state_dict', from_state_dict)):
      module = nn.build_network(imported.network, num_classes=imported.num_classes)
      denoise = jax.jit(imported.readout.model(nn.make_apply(module)))
      worst = 0.0
      for sigma in sigmas:
        x = rng.standard_normal((args.batch, 3, args.resolution, args.resolution)).astype(np.float32) * (0.5 + sigma)
        labels = rng.integers(0, label_dim, args.batch)
        for conditional in (True, False):
          one_hot = torch.nn.functional.one_hot(torch.as_tensor(labels), label_dim).float() if conditional else None
          with torch.no_grad():
            want = net(torch.as_tensor(x), torch.full((args.batch,), float(sigma)), one_hot).numpy()
          y = jnp.asarray(labels) if conditional else None
          got = np.asarray(denoise(imported.params, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.float32(sigma), None,
                                   y)).transpose(0, 3, 1, 2)
          worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
      print(json.dumps({'architecture': name, 'import': source, 'resolution': args.resolution,
                        'max_relative_error': worst, 'sigmas': sigmas.tolist()}), flush=True)

  for preset, (resolution, channels, label_dim, augment_dim, model_type) in PUBLISHED.items():
    class_name, fields = import_weights.PRESETS[preset]
    net = networks.EDMPrecond(img_resolution=resolution, img_channels=channels, label_dim=label_dim,
                              model_type=model_type, augment_dim=augment_dim,
                              **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()})
    theirs = sum(p.numel() for p in net.parameters())
    theirs_buffers = sum(b.numel() for n, b in net.named_buffers() if n.endswith('freqs'))
    network = import_weights.network_config(class_name, dict(fields, augment_dim=augment_dim))
    ours = import_weights.parameter_count(network, (resolution, resolution, channels), label_dim)
    print(json.dumps({'published': preset, 'edm_parameters': theirs, 'edm_fourier_frequencies': theirs_buffers,
                      'port_parameters': ours, 'equal': ours == theirs + theirs_buffers}), flush=True)


if __name__ == '__main__':
  main()
