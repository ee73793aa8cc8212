"""EDM2's network in JAX against EDM2's own PyTorch code, on random weights, through the project's importer.

  python experiments/parity/edm2.py --reference=EDM2_CHECKOUT

EDM2_CHECKOUT is a clone of https://github.com/NVlabs/edm2 (not a dependency of the project; it needs torch). The
script builds EDM2's `Precond` at a small size with random weights (every parameter, including the zero-initialised
gains, and the Fourier buffers redrawn), writes it as EDM2 writes its network pickles and as a `torch.save` state
dict, imports both with `fewstep_jax.tools.import_checkpoint`, and compares the denoiser D(x; sigma, labels) and the
uncertainty u(sigma) with the project's `edm` readout of the imported network, over noise levels from 0.002 to 80,
conditional and unconditional; then trains both for a few Adam steps from those weights, EDM2's with its forced
weight normalisation in training mode and the port's through TrainedNetwork's projection, and compares them after
every step. It also prints the parameter counts of the published ImageNet-64 and -512 sizes,
EDM2's against the port's (`jax.eval_shape`). One JSON line per check.
"""
import argparse
import json
import os
import pickle
import sys
import tempfile

import numpy as np

SMALL = dict(model_channels=32, channel_mult=[1, 2, 2], num_blocks=2, attn_resolutions=[8, 4], dropout=0.0,
             logvar_channels=16)
# EDM2's published networks (train_edm2.py presets): (resolution, channels, labels, model_channels).
PUBLISHED = {'edm2_img64_s': (64, 3, 1000, 192), 'edm2_img64_xl': (64, 3, 1000, 384),
             'edm2_img512_s': (64, 4, 1000, 192), 'edm2_img512_xxl': (64, 4, 1000, 448)}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--reference', required=True, help='a checkout of NVlabs/edm2')
  parser.add_argument('--resolution', type=int, default=16)
  parser.add_argument('--batch', type=int, default=4)
  args = parser.parse_args()
  sys.path.insert(0, os.path.abspath(args.reference))
  import torch
  from training import networks_edm2  # EDM2's code, from the checkout.

  import jax
  import jax.numpy as jnp
  from fewstep_jax import nn
  from fewstep_jax.tools import import_checkpoint as import_weights

  jax.config.update('jax_default_matmul_precision', 'highest')
  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  sigmas = np.asarray([0.002, 0.05, 0.5, 2.0, 20.0, 80.0], np.float32)
  label_dim = 10
  net = networks_edm2.Precond(img_resolution=args.resolution, img_channels=3, label_dim=label_dim, use_fp16=False,
                              **SMALL).eval()
  with torch.no_grad():
    for name, tensor in list(net.named_parameters()) + list(net.named_buffers()):
      tensor.copy_(torch.randn_like(tensor) * (2.0 if name.endswith('freqs') else 1.0))
  with tempfile.TemporaryDirectory() as tmp:
    pkl, pt = os.path.join(tmp, 'net.pkl'), os.path.join(tmp, 'net.pt')
    with open(pkl, 'wb') as f:
      pickle.dump(dict(ema=net, encoder=None), f)
    torch.save(net.state_dict(), pt)
    imports = {'pickle': import_weights.read_nvlabs_pickle(pkl),
               'state_dict': import_weights.read_state_dict_file(
                   pt, 'EDM2UNet', fields={k: v for k, v in SMALL.items()})}
  for source, imported in imports.items():
    module = nn.build_network(imported.network, num_classes=imported.num_classes)
    apply = nn.make_apply(module)
    denoise = jax.jit(imported.readout.model(lambda *a: apply(*a)[0]))
    logvar = jax.jit(lambda params, sigma: apply(params, jnp.zeros((args.batch, args.resolution, args.resolution, 3)),
                                                 jnp.log(sigma) / 4, None, None)[1])
    worst, worst_logvar = 0.0, 0.0
    for sigma in sigmas:
      x = rng.standard_normal((args.batch, 3, args.resolution, args.resolution)).astype(np.float32) * (0.5 + sigma)
      labels = rng.integers(0, label_dim, args.batch)
      for conditional in (True, False):
        one_hot = torch.nn.functional.one_hot(torch.as_tensor(labels), label_dim).float() if conditional else None
        with torch.no_grad():
          want, want_logvar = net(torch.as_tensor(x), torch.full((args.batch,), float(sigma)), one_hot,
                                  return_logvar=True)
        y = jnp.asarray(labels) if conditional else None
        got = np.asarray(denoise(imported.params, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.float32(sigma), None, y))
        worst = max(worst, float(np.abs(got.transpose(0, 3, 1, 2) - want.numpy()).max() / np.abs(want.numpy()).max()))
        got_logvar = np.asarray(logvar(imported.params, jnp.full((args.batch,), sigma)))
        worst_logvar = max(worst_logvar, float(np.abs(got_logvar - want_logvar.numpy().ravel()).max()
                                               / np.abs(want_logvar.numpy()).max()))
    print(json.dumps({'architecture': 'edm2', 'import': source, 'resolution': args.resolution,
                      'max_relative_error': worst, 'logvar_max_relative_error': worst_logvar}), flush=True)

  # Training under forced weight normalisation: EDM2's own MPConv in training mode (the in-place re-normalisation
  # at every forward pass) with torch's Adam, against TrainedNetwork's projection with optax's Adam, from the same
  # weights on the same fixed batch; the networks' outputs (eval mode) are compared after every step.
  import optax
  from fewstep_jax.train.trained import TrainedNetwork
  imported = imports['state_dict']
  module = nn.build_network(imported.network, num_classes=imported.num_classes)
  denoise = imported.readout.model(lambda *a: nn.make_apply(module)(*a)[0])
  x = rng.standard_normal((args.batch, 3, args.resolution, args.resolution)).astype(np.float32)
  target = rng.standard_normal(x.shape).astype(np.float32)
  sigma = np.asarray([0.1, 0.5, 2.0, 10.0][:args.batch], np.float32)
  labels = rng.integers(0, label_dim, args.batch)
  one_hot = torch.nn.functional.one_hot(torch.as_tensor(labels), label_dim).float()
  lr, steps = 1e-3, 4
  x_nhwc, target_nhwc = jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(target.transpose(0, 2, 3, 1))
  loss = lambda params: jnp.mean(jnp.square(denoise(params, x_nhwc, jnp.asarray(sigma), None, jnp.asarray(labels))
                                            - target_nhwc))
  trained = TrainedNetwork(module, optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8))
  state = trained.init(imported.params)
  update = jax.jit(lambda state: trained.apply_gradients(state, jax.grad(loss)(state.params)))
  optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
  worst_step = 0.0
  for step in range(steps):
    net.train()
    optimizer.zero_grad()
    torch.mean(torch.square(net(torch.as_tensor(x), torch.as_tensor(sigma), one_hot) - torch.as_tensor(target))
               ).backward()
    optimizer.step()
    state = update(state)
    net.eval()
    with torch.no_grad():
      want = net(torch.as_tensor(x), torch.as_tensor(sigma), one_hot).numpy()
    got = np.asarray(denoise(state.params, x_nhwc, jnp.asarray(sigma), None, jnp.asarray(labels))).transpose(0, 3, 1, 2)
    worst_step = max(worst_step, float(np.abs(got - want).max() / np.abs(want).max()))
  print(json.dumps({'architecture': 'edm2', 'check': f'{steps} Adam steps (lr {lr}) under forced weight normalisation',
                    'max_relative_error': worst_step}), flush=True)

  for preset, (resolution, channels, labels, model_channels) in PUBLISHED.items():
    net = networks_edm2.Precond(img_resolution=resolution, img_channels=channels, label_dim=labels,
                                model_channels=model_channels)
    theirs = sum(p.numel() for p in net.parameters())
    buffers = sum(b.numel() for b in net.buffers())
    class_name, fields = import_weights.PRESETS[preset]
    ours = import_weights.parameter_count(import_weights.network_config(class_name, fields),
                                          (resolution, resolution, channels), labels)
    print(json.dumps({'published': preset, 'edm2_parameters': theirs, 'edm2_fourier_buffers': buffers,
                      'port_parameters': ours, 'equal': ours == theirs + buffers}), flush=True)


if __name__ == '__main__':
  main()
