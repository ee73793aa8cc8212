"""CTM's two-time U-Net in JAX (`cm_unet` with two_times) against sony/ctm's own PyTorch code, on random weights.

  python experiments/parity/ctm_unet.py --reference=CTM_CHECKOUT

CTM_CHECKOUT is a clone of https://github.com/sony/ctm (not a dependency of the project; it needs torch and
einops). The script builds its code/cm/unet.py `UNetModel` with training_mode='ctm' (the s embedding
`time_embed_s` and every ResBlock's `emb_layers_s`) at a small size with the ImageNet-64 network's arguments,
redraws every parameter, saves its state dict, imports it with `fewstep_jax.tools.import_checkpoint` (UNetModel,
two_times), and compares the raw networks at CTM's time inputs (`rescaling_t`: 250 ln t and 250 ln s; here
ln(t) / 4 and ln(s) / 4 with time_scale 1000), with s and without (its teacher role). The checkout's module-level
imports of flash-attn and xformers are stubbed and its flash attention kernel is replaced by the same
"b (three h d) s" softmax attention in float32. One JSON line.
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
  parser.add_argument('--reference', required=True, help='a checkout of sony/ctm')
  parser.add_argument('--batch', type=int, default=3)
  args = parser.parse_args()
  sys.path.insert(0, os.path.join(os.path.abspath(args.reference), 'code'))
  # code/cm/unet.py's module-level imports of flash-attn and xformers, and dist_util's of MPI and blob storage.
  openai_unet_support.stub_modules({
      'flash_attn': {}, 'flash_attn.flash_attn_interface': {'flash_attn_varlen_qkvpacked_func': None},
      'flash_attn.bert_padding': {'unpad_input': None, 'pad_input': None}, 'xformers': {}, 'xformers.components': {},
      'xformers.components.attention': {'ScaledDotProduct': None}, 'blobfile': {}, 'mpi4py': {'MPI': None}})
  import torch
  from cm import unet  # sony/ctm's, from the checkout.

  unet.QKVFlashAttention = openai_unet_support.float32_attention()

  import jax
  import jax.numpy as jnp
  from fewstep_jax import nn
  from fewstep_jax.tools import import_checkpoint as import_weights

  jax.config.update('jax_default_matmul_precision', 'highest')
  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  size, classes = 16, 10
  net = unet.UNetModel(image_size=size, in_channels=3, model_channels=64, out_channels=3, num_res_blocks=1,
                       attention_resolutions=(2, 4), dropout=0.0, channel_mult=(1, 2, 2), num_classes=classes,
                       num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True,
                       training_mode='ctm').eval()
  with torch.no_grad():
    for tensor in net.parameters():
      tensor.copy_(torch.randn_like(tensor) * (0.05 if tensor.ndim > 1 else 0.2))
  fields = dict(model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=1, attention_ds=(2, 4),
                num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True, two_times=True,
                image_size=size)
  with tempfile.TemporaryDirectory() as tmp:
    pt = os.path.join(tmp, 'model.pt')
    torch.save(net.state_dict(), pt)
    imported = import_weights.read_state_dict_file(pt, 'UNetModel', fields=fields)
  apply = jax.jit(nn.make_apply(nn.build_network(imported.network, num_classes=imported.num_classes)))
  worst = 0.0
  for t, s in ((80.0, 10.0), (10.0, 1.0), (1.0, 0.002), (0.5, None)):
    x = rng.standard_normal((args.batch, 3, size, size)).astype(np.float32)
    labels = rng.integers(0, classes, args.batch)
    with torch.no_grad():
      want = net(torch.as_tensor(x), torch.full((args.batch,), 250 * math.log(t)), y=torch.as_tensor(labels),
                 s=None if s is None else torch.full((args.batch,), 250 * math.log(s))).numpy()
    c_noise = lambda sigma: jnp.full((args.batch,), math.log(sigma) / 4)
    got = np.asarray(apply(imported.params, jnp.asarray(x.transpose(0, 2, 3, 1)), c_noise(t),
                           None if s is None else c_noise(s), jnp.asarray(labels))).transpose(0, 3, 1, 2)
    worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
  print(json.dumps({'architecture': 'cm_unet (two_times, CTM)', 'import': 'state dict (torch.save)',
                    'max_relative_error': worst}), flush=True)


if __name__ == '__main__':
  main()
