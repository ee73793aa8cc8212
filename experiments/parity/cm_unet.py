"""The consistency-models code's U-Net (its EDM teacher's network) in JAX against its own PyTorch code, on random
weights, through the project's importer.

  python experiments/parity/cm_unet.py --reference=CM_CHECKOUT

CM_CHECKOUT is a clone of https://github.com/openai/consistency_models (not a dependency of the project; it needs
torch and einops). The script builds `cm.unet.UNetModel` at a small size with `create_model`'s arguments of the
ImageNet-64 teacher (scale-shift norm, resblock up/down, 64-channel heads, attention at three resolutions), redraws
every parameter (the zero-initialised layers included), saves its state dict with torch.save as CM saves
`edm_imagenet64_ema.pt`, imports it with `fewstep_jax.tools.import_checkpoint`, and compares the project's EDM denoiser (the
`edm` readout) with CM's `KarrasDenoiser.denoise` at sigma from 0.002 to 80, with labels. The checkout's attention
kernels need flash-attn (CUDA) or cast to float16; they are replaced by the same "b (three h d) s" softmax
attention in float32, so the comparison is of the network around them. It also prints the parameter count of the
published teacher's size, the original's against the port's (`jax.eval_shape`). One JSON line per check.
(The checkout's training-side imports, piq, torchvision, mpi4py and blobfile, are stubbed.)
"""
import argparse
import json
import math
import os
import sys
import tempfile

import numpy as np

import openai_unet_support  # experiments/parity/openai_unet_support.py


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--reference', required=True, help='a checkout of openai/consistency_models')
  parser.add_argument('--batch', type=int, default=3)
  args = parser.parse_args()
  sys.path.insert(0, os.path.abspath(args.reference))
  # The training-side imports of cm/karras_diffusion.py and cm/dist_util.py (LPIPS, crops, MPI, blob storage),
  # which the network and its denoiser do not use.
  openai_unet_support.stub_modules({'piq': {'LPIPS': lambda **kwargs: None}, 'torchvision': {},
                                    'torchvision.transforms': {'RandomCrop': None}, 'blobfile': {},
                                    'mpi4py': {'MPI': None}})
  import torch
  from cm import karras_diffusion, script_util, unet

  unet.QKVFlashAttention = openai_unet_support.float32_attention()

  import jax
  import jax.numpy as jnp
  from fewstep_jax import nn
  from fewstep_jax.tools import import_checkpoint as import_weights

  jax.config.update('jax_default_matmul_precision', 'highest')
  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  size, classes = 16, 10
  script_util.NUM_CLASSES = classes
  teacher_args = dict(learn_sigma=False, class_cond=True, use_checkpoint=False, attention_resolutions='8,4,2',
                      num_heads=4, num_head_channels=32, num_heads_upsample=-1, use_scale_shift_norm=True,
                      dropout=0.1, resblock_updown=True, use_fp16=False, use_new_attention_order=False)
  net = script_util.create_model(size, 64, 1, channel_mult='1,2,2', **teacher_args).eval()
  with torch.no_grad():
    for tensor in net.parameters():
      tensor.copy_(torch.randn_like(tensor) * (0.05 if tensor.ndim > 1 else 0.2))
  denoiser = karras_diffusion.KarrasDenoiser(sigma_data=0.5)
  fields = dict(model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=1, attention_ds=(2, 4, 8),
                num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True, dropout=0.1, image_size=size)
  with tempfile.TemporaryDirectory() as tmp:
    pt = os.path.join(tmp, 'ema.pt')
    torch.save(net.state_dict(), pt)
    imported = import_weights.read_state_dict_file(pt, 'UNetModel', fields=fields)
  module = nn.build_network(imported.network, num_classes=imported.num_classes)
  denoise = jax.jit(imported.readout.model(nn.make_apply(module)))
  worst = 0.0
  for sigma in (0.002, 0.1, 1.0, 10.0, 80.0):
    x = (rng.standard_normal((args.batch, 3, size, size)) * math.sqrt(0.25 + sigma ** 2)).astype(np.float32)
    labels = rng.integers(0, classes, args.batch)
    with torch.no_grad():
      _, want = denoiser.denoise(net, torch.as_tensor(x), torch.full((args.batch,), sigma),
                                 y=torch.as_tensor(labels))
    want = want.numpy()
    got = np.asarray(denoise(imported.params, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.float32(sigma), None,
                             jnp.asarray(labels))).transpose(0, 3, 1, 2)
    worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
  print(json.dumps({'architecture': 'cm_unet', 'import': 'state dict (torch.save)', 'data_shape': imported.data_shape,
                    'num_classes': imported.num_classes, 'max_relative_error': worst}), flush=True)

  script_util.NUM_CLASSES = 1000
  published = script_util.create_model(64, 192, 3, **dict(teacher_args, attention_resolutions='32,16,8',
                                                          num_head_channels=64))
  theirs = sum(p.numel() for p in published.parameters())
  class_name, preset = import_weights.PRESETS['cm_imagenet64']
  preset = {key: value for key, value in preset.items() if key != 'image_size'}
  ours = import_weights.parameter_count(import_weights.network_config(class_name, preset), (64, 64, 3), 1000)
  print(json.dumps({'published': 'edm_imagenet64_ema.pt', 'cm_parameters': theirs, 'port_parameters': ours,
                    'equal': ours == theirs}), flush=True)


if __name__ == '__main__':
  main()
