"""A LoRA run's exported files (fewstep_jax.tools.export_lora) loaded by diffusers, against the run's own network.

  python experiments/parity/lora.py [--out=DIR]

Trains a LoRA CD student for 3 steps on the captioned digits' `sd_unet` (its 'digits' preset, the SDXL structure:
DownBlock2D first, linear projections, the text_time embedding) from a teacher of random weights
(`sd_unet.random_weights`), at Adam's learning rate 0.05 so that every adapted weight moves, then exports its
parameters ('params') and checks, on the same random latents, timesteps, text tokens, pooled embedding and time ids, max
|diffusers - jax| / max |jax|:
  merged   UNet2DConditionModel.from_pretrained(OUT, subfolder='unet') against the run's merged parameters;
  adapter  the teacher's weights in UNet2DConditionModel plus `load_lora_adapter(OUT/pytorch_lora_weights.safetensors,
           prefix='unet')` (diffusers' peft path, as pipe.load_lora_weights loads LCM-LoRA) against the same;
  base     the adapter-free network against the teacher, which shows the adapter's effect is above the tolerance.
Needs torch, diffusers and peft (not dependencies of the project). Non-zero exit above --tolerance.

Measured (diffusers 0.42.1, peft 0.22.0, torch 2.13.0+cpu, jax 0.10.2, CPU; rank 4, 73,856 factor parameters over
the 'digits' U-Net): merged 1.3e-06, adapter 1.6e-06; the adapter moves the output by 7.9e-02 of its scale.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sd_unet as sd_unet_parity  # noqa: E402  (the SD U-Net parity script's inputs and reference helpers)


def unet_of(config):
  from fewstep_jax.nn import sd_unet
  width = config.network.cross_attention_dim
  return sd_unet.from_config(config.network.preset, **({'cross_attention_dim': width} if width else {}))


def train_lora_run(workdir: str):
  import jax
  import jax.numpy as jnp
  from fewstep_jax import data as data_lib
  from fewstep_jax import paths, trainer
  from fewstep_jax.config_base import load_config
  from fewstep_jax.inputs import Teacher
  from fewstep_jax.nn import sd_unet
  repo = os.path.dirname(os.path.dirname(HERE))
  config = load_config(os.path.join(repo, 'configs/digits_text/cd.py'),
                       {'method.teacher': 'in memory', 'method.init_from': 'in memory', 'lora.rank': 4,
                        'lora.alpha': 8.0, 'optim.lr': 0.05, 'train.num_steps': 3, 'train.batch_size': 8, 'train.log_every': 1,
                        'train.checkpoint_every': 3, 'eval.at_end': False, 'train.tensorboard': False})
  network = unet_of(config)
  params = jax.tree.map(jnp.asarray, sd_unet.from_state_dict(sd_unet.random_weights(network, seed=3), network))
  shape = data_lib.build_data(config.data, global_batch_size=8, seed=0).data_shape
  teacher = Teacher(network=config.network, readout=paths.readout('edm'), data_shape=shape, num_classes=0,
                    params=params)
  trainer.train(config, workdir, inputs={'teacher': teacher, 'student_init': params})
  return config, network, params


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--out', default='')
  parser.add_argument('--tolerance', type=float, default=1e-5)
  args = parser.parse_args()
  out = args.out or tempfile.mkdtemp(prefix='lora_parity_')
  import jax
  from fewstep_jax import runs
  from fewstep_jax.nn import sd_unet
  from fewstep_jax.tools import export_lora
  workdir = os.path.join(out, 'run')
  config, network, base = train_lora_run(workdir)
  _, info = runs.read_run_info(workdir)

  export_dir = os.path.join(out, 'export')
  name = 'params'  # Adam at lr 0.05 moves every B by about 0.05 a step; the EMA copies barely move in 3 steps.
  export_lora.export(workdir, export_dir, name)
  _, merged = runs.restore_parameters(workdir, info, [name], merged=True)
  merged = jax.device_get(merged[name])
  unet = unet_of(config)
  x = sd_unet_parity.inputs(unet, np.random.default_rng(1), size=8, tokens=7)
  want = sd_unet_parity.jax_output(unet, merged, x)
  import torch
  from diffusers import UNet2DConditionModel
  results = {}
  loaded = UNet2DConditionModel.from_pretrained(export_dir, subfolder='unet').eval()
  results['merged'] = sd_unet_parity.relative(sd_unet_parity.torch_output(loaded, x), want)
  reference = sd_unet_parity.reference_net(sd_unet_parity.diffusers_config(sd_unet.network_fields(unet)),
                                           sd_unet.to_state_dict(jax.device_get(base)))
  base_out = sd_unet_parity.torch_output(reference, x)
  reference.load_lora_adapter(os.path.join(export_dir, export_lora.ADAPTER_FILE), prefix='unet')
  results['adapter'] = sd_unet_parity.relative(sd_unet_parity.torch_output(reference, x), want)
  results['adapter_effect'] = sd_unet_parity.relative(base_out, want)
  del torch
  print(json.dumps(results))
  failed = [key for key in ('merged', 'adapter') if results[key] > args.tolerance]
  if failed or results['adapter_effect'] < 100 * args.tolerance:
    sys.exit(f'failed: {failed or "the adapter changes too little to be checked"}')


if __name__ == '__main__':
  main()
