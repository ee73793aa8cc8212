"""Parity of fewstep_jax's FD-DINOv2 features with DINOv2's own ViT and EDM2's preprocessing, on random weights.

  python experiments/parity/dinov2.py --reference=PATH_TO_DINOV2_CHECKOUT [--depth=24]

Needs torch beside fewstep_jax. The reference network is built from the checkout's
`dinov2.models.vision_transformer.vit_large` with the arguments `dinov2/hub/backbones.py` gives `dinov2_vitl14`
(518-pixel position grid, layer scale 1.0, no registers, offset 0.1, no antialiasing), with random weights, which
fewstep_jax reads through its importer (state dict -> .safetensors -> load_weights). The reference input is EDM2's
`DINOv2Detector` preprocessing (calculate_metrics.py, resize_mode 'torch'): bicubic antialiased resize of the 8-bit
images to 224, / 255, ImageNet normalisation. Prints max |jax - torch| / max |torch| of the features per input size
and exits non-zero above --tolerance. --depth < 24 checks a shallower ViT-L (faster).
"""
import argparse
import os
import sys
import tempfile

import numpy as np


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--reference', required=True, help='a checkout of github.com/facebookresearch/dinov2')
  parser.add_argument('--depth', type=int, default=24)
  parser.add_argument('--sizes', default='8,32,64,256')
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--tolerance', type=float, default=1e-4)
  parser.add_argument('--golden', default='', help='also write a tiny ViT\'s reference outputs to this .npz '
                      '(tests/data/dinov2_golden.npz is written so)')
  args = parser.parse_args()
  sys.path.insert(0, args.reference)
  os.environ.setdefault('XFORMERS_DISABLED', '1')
  import jax
  import torch
  import torch.nn.functional as F
  from dinov2.models import vision_transformer as vits
  from safetensors.numpy import save_file
  from fewstep_jax.eval import dinov2

  def reference_model(vit, state_dict):
    model = vits.DinoVisionTransformer(img_size=vit.pos_grid * vit.patch, patch_size=vit.patch, embed_dim=vit.dim,
                                       depth=vit.depth, num_heads=vit.heads, mlp_ratio=vit.mlp_ratio,
                                       init_values=1.0, ffn_layer='mlp', block_chunks=0, num_register_tokens=0,
                                       interpolate_antialias=False, interpolate_offset=0.1,
                                       block_fn=vits.partial(vits.Block, attn_class=vits.MemEffAttention))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)
    return model.eval()

  def edm2_features(model, pixels):  # DINOv2Detector.__call__ on uint8 NCHW images.
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(torch.float32)
    x = F.interpolate(x, size=(224, 224), mode='bicubic', antialias=True)
    x = x / 255
    x = x - torch.tensor([0.485, 0.456, 0.406]).reshape(1, -1, 1, 1)
    x = x / torch.tensor([0.229, 0.224, 0.225]).reshape(1, -1, 1, 1)
    return model(x)

  def compare(vit, seed, sizes):
    state_dict = dinov2.random_weights(vit, seed)
    state_dict['mask_token'] = np.zeros((1, vit.dim), np.float32)
    with tempfile.TemporaryDirectory() as directory:
      path = os.path.join(directory, 'dinov2.safetensors')
      save_file(state_dict, path)
      loaded_vit, weights = dinov2.load_weights(path)
    assert loaded_vit == vit, (loaded_vit, vit)
    model = reference_model(vit, state_dict)
    fn = jax.jit(lambda w, x: dinov2.features(vit, w, x))
    rng = np.random.default_rng(1)
    worst = 0.0
    for size in sizes:
      pixels = rng.integers(0, 256, (args.batch, size, size, 3)).astype(np.uint8)
      pixels[0] = np.linspace(0, 255, size * size * 3).reshape(size, size, 3).astype(np.uint8)
      with torch.no_grad():
        theirs = edm2_features(model, pixels).numpy()
      ours = np.asarray(fn(weights, (pixels.astype(np.float32) - 127.5) / 127.5))
      relative = np.abs(ours - theirs).max() / np.abs(theirs).max()
      worst = max(worst, relative)
      print(f'{vit}  {size:4d}x{size:<4d} max|diff|/max|ref| = {relative:.2e}   (max|ref| {np.abs(theirs).max():.3g})')
    return worst, model, weights

  torch.manual_seed(0)
  print(f'dinov2 {vits.__file__}, torch {torch.__version__}, jax {jax.__version__}')
  worst, _, _ = compare(dinov2.ViT(depth=args.depth), 0, list(map(int, args.sizes.split(','))))
  if args.golden:
    tiny = dinov2.ViT(dim=64, depth=2, heads=1, pos_grid=37)
    tiny_worst, model, _ = compare(tiny, 5, [8, 32])
    worst = max(worst, tiny_worst)
    pixels = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    with torch.no_grad():
      np.savez(args.golden, pixels=pixels, features=edm2_features(model, pixels).numpy(), weights_seed=5,
               dim=64, depth=2, heads=1)
    print(f'golden outputs written to {args.golden}')
  print(f'worst {worst:.2e} (tolerance {args.tolerance:g})')
  sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == '__main__':
  main()
