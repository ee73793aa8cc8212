"""Parity of fewstep_jax's FID Inception-v3 with pytorch-fid's, on random weights (nothing is downloaded).

  python experiments/parity/inception.py --reference=PATH_TO_PYTORCH_FID_CHECKOUT

Needs torch and torchvision (pytorch-fid's own requirements) beside fewstep_jax; the checkout's src/ is put on the
path, or an installed pytorch_fid is used when --reference is not given. pytorch-fid's network is built from its own
classes (torchvision's Inception3 with FIDInceptionA / C / E_1 / E_2 swapped in, as its fid_inception_v3 does), given
random weights, which fewstep_jax reads through its importer (state dict -> .safetensors -> load_weights). Both then
see the same 8-bit images at several sizes, resized inside each network's own preprocessing. Prints the largest
relative difference of pool3 features and logits (max |jax - torch| / max |torch|) per input size, and exits
non-zero above --tolerance.
"""
import argparse
import os
import sys
import tempfile

import numpy as np


def reference_network(pytorch_fid_inception, state_dict):
  import torch
  module = pytorch_fid_inception
  inception = module._inception_v3(num_classes=1008, aux_logits=False, weights=None)
  for name, block, args in (('Mixed_5b', module.FIDInceptionA, (192, 32)), ('Mixed_5c', module.FIDInceptionA, (256, 64)),
                            ('Mixed_5d', module.FIDInceptionA, (288, 64)), ('Mixed_6b', module.FIDInceptionC, (768, 128)),
                            ('Mixed_6c', module.FIDInceptionC, (768, 160)), ('Mixed_6d', module.FIDInceptionC, (768, 160)),
                            ('Mixed_6e', module.FIDInceptionC, (768, 192)), ('Mixed_7b', module.FIDInceptionE_1, (1280,)),
                            ('Mixed_7c', module.FIDInceptionE_2, (2048,))):
    setattr(inception, name, block(*args))
  inception.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)
  original = module.fid_inception_v3
  module.fid_inception_v3 = lambda: inception  # InceptionV3 would download its weights; hand it ours.
  try:
    wrapper = module.InceptionV3([module.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
  finally:
    module.fid_inception_v3 = original
  return wrapper, inception.fc


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--reference', default='', help='a checkout of github.com/mseitzer/pytorch-fid')
  parser.add_argument('--sizes', default='8,32,64,256,400')
  parser.add_argument('--batch', type=int, default=3)
  parser.add_argument('--tolerance', type=float, default=1e-4)
  parser.add_argument('--golden', default='', help='also write the reference outputs for two 32x32 images to this '
                      '.npz (tests/data/inception_golden.npz is written so)')
  args = parser.parse_args()
  if args.reference:
    sys.path.insert(0, os.path.join(args.reference, 'src'))
  import jax
  import torch
  from pytorch_fid import inception as pytorch_fid_inception
  from safetensors.numpy import save_file
  from fewstep_jax.eval import inception

  jax.config.update('jax_default_matmul_precision', 'highest')
  torch.manual_seed(0)
  state_dict = inception.to_state_dict(inception.random_weights(seed=0))
  state_dict.update({k.replace('running_var', 'num_batches_tracked'): np.zeros((), np.int64)
                     for k in state_dict if k.endswith('running_var')})
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, 'inception.safetensors')
    save_file(state_dict, path)
    weights = inception.load_weights(path)
  reference, fc = reference_network(pytorch_fid_inception, {k: v for k, v in state_dict.items()})
  features_fn = jax.jit(inception.features_and_logits)
  rng = np.random.default_rng(1)
  worst = 0.0
  print(f'pytorch-fid {pytorch_fid_inception.__file__}, torch {torch.__version__}, jax {jax.__version__}')
  for size in map(int, args.sizes.split(',')):
    pixels = rng.integers(0, 256, (args.batch, size, size, 3)).astype(np.uint8)
    pixels[0] = np.linspace(0, 255, size * size * 3).reshape(size, size, 3).astype(np.uint8)  # Smooth ramp.
    with torch.no_grad():
      images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0  # As pytorch-fid reads an image file.
      torch_features = reference(images)[0].flatten(1)
      torch_logits = fc(torch_features)
    model_range = (pixels.astype(np.float32) - 127.5) / 127.5  # Quantises back to exactly these pixels.
    jax_features, jax_logits = map(np.asarray, features_fn(weights, model_range))
    for name, ours, theirs in (('pool3', jax_features, torch_features.numpy()),
                               ('logits', jax_logits, torch_logits.numpy())):
      relative = np.abs(ours - theirs).max() / np.abs(theirs).max()
      worst = max(worst, relative)
      print(f'{size:4d}x{size:<4d} {name:7s} max|diff|/max|ref| = {relative:.2e}   (max|ref| {np.abs(theirs).max():.3g})')
  if args.golden:
    pixels = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    with torch.no_grad():
      features = reference(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0)[0].flatten(1)
      np.savez(args.golden, pixels=pixels, features=features.numpy(), logits=fc(features).numpy(), weights_seed=0)
    print(f'golden outputs written to {args.golden}')
  print(f'worst {worst:.2e} (tolerance {args.tolerance:g})')
  sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == '__main__':
  main()
