"""A LoRA run's adapters in diffusers' files: the adapter alone, and the U-Net with it merged.

  python -m fewstep_jax.tools.export_lora --workdir=runs/sd15_lcm_lora --out=exports/sd15_lcm_lora [--params=ema_0.95]

writes, for a run whose network is `sd_unet` and that trained LoRA factors (config.lora.rank > 0; nn/lora.py):
  OUT/pytorch_lora_weights.safetensors   the factors in diffusers' peft layout ('unet.<module>.lora_A.weight',
                                         '.lora_B.weight'), the scale alpha / r folded into B:
                                         `pipe.load_lora_weights(OUT)` adds them to a pipeline's U-Net, as
                                         LCM-LoRA is used;
  OUT/unet/diffusion_pytorch_model.safetensors and OUT/unet/config.json
                                         the base with the factors merged in, float32, in diffusers' layout:
                                         `UNet2DConditionModel.from_pretrained(OUT, subfolder='unet')`.
--params picks the copy (the run's eval.params by default: an EMA copy where it keeps one). Nothing already in OUT is
replaced: an existing file is an error.
"""
import json
import os

import jax
import numpy as np
from absl import flags

from fewstep_jax import cli, errors, runs
from fewstep_jax.nn import lora as lora_lib
from fewstep_jax.nn import sd_unet

ADAPTER_FILE = 'pytorch_lora_weights.safetensors'
UNET_FILES = ('unet/diffusion_pytorch_model.safetensors', 'unet/config.json')


def diffusers_config(network) -> dict:
  """config.json of the run's sd_unet network, as diffusers' UNet2DConditionModel reads it."""
  fields = {'preset': network.preset}
  if network.get('cross_attention_dim'):
    fields['cross_attention_dim'] = network.cross_attention_dim
  unet = sd_unet.from_config(fields.pop('preset'), **fields)
  if network.get('two_times'):
    unet = unet.replace(time_cond_proj_dim=unet.block_out_channels[0])
  values = {key: list(value) if isinstance(value, tuple) else value
            for key, value in sd_unet.network_fields(unet).items()}
  return {'_class_name': 'UNet2DConditionModel', **values}


def export(workdir: str, out: str, params_name: str | None = None) -> list:
  """Writes the module docstring's files; returns their paths."""
  config, info = runs.read_run_info(workdir)
  if not info.get('lora'):
    raise errors.ConfigError(f'{workdir} trained no LoRA factors (lora.rank=0): its checkpoint holds full weights')
  if config.network.name != 'sd_unet':
    raise errors.ConfigError(f"{workdir}'s network is {config.network.name!r}; diffusers' layout is written for "
                             "'sd_unet' runs")
  written = [os.path.join(out, ADAPTER_FILE)] + [os.path.join(out, name) for name in UNET_FILES]
  existing = [path for path in written if os.path.exists(path)]
  if existing:
    raise FileExistsError(f'{existing[0]} exists; choose another --out or remove it')
  name = params_name or config.eval.params
  recorded = info['lora']
  lora = lora_lib.LoRA(rank=recorded['rank'], alpha=recorded['alpha'], targets=tuple(recorded['targets']), base='')
  _, factors = runs.restore_parameters(workdir, info, [name], max_to_keep=config.train.max_to_keep)
  _, merged = runs.restore_parameters(workdir, info, [name], max_to_keep=config.train.max_to_keep, merged=True)
  from safetensors.numpy import save_file
  os.makedirs(os.path.join(out, 'unet'), exist_ok=True)
  save_file(lora_lib.to_diffusers(lora, jax.device_get(factors[name])), written[0])
  state_dict = {key: np.ascontiguousarray(value, np.float32)
                for key, value in sd_unet.to_state_dict(jax.device_get(merged[name])).items()}
  save_file(state_dict, written[1])
  with open(written[2], 'w') as f:
    json.dump(diffusers_config(config.network), f, indent=2)
  return written


FLAGS = flags.FLAGS


def main(argv):
  del argv
  for path in export(FLAGS.workdir, FLAGS.out, FLAGS.params):
    print(f'-> {path}')


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'A trained run with LoRA factors (config.lora.rank > 0) on sd_unet.')
  flags.DEFINE_string('out', None, 'The directory to write.')
  flags.DEFINE_string('params', None, "The parameter copy ('params' or an EMA copy); default the run's eval.params.")
  flags.mark_flags_as_required(['workdir', 'out'])
  cli.run(main)
