"""Shared config defaults. Every experiment file in configs/ starts from `base_config` and overrides.

Every block is complete (each field the code reads is present with its default), and `base_config` returns the
config locked, so a misspelled key in a config file (`config.train.num_stepz = 50`) or on the command line is an
error naming the closest field, never a silent no-op.

Files a run reads by default live in cache directories, never in the current directory: data.dir (the digits,
prepared TFDS datasets) is $FEWSTEP_JAX_DATA, else ~/.cache/fewstep_jax/data (`fewstep_jax.data.default_data_dir`).
"""
import difflib

import ml_collections

from fewstep_jax import data, nn
from fewstep_jax.methods import method_defaults
from fewstep_jax.train.optim import optim_defaults
from fewstep_jax.train.state import ema_name


def base_config(*, method: str, network: str, dataset: str) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.method = method_defaults(method)
  config.network = nn.network_defaults(network)
  config.data = data.data_defaults()
  config.data.name = dataset
  config.optim = optim_defaults()
  config.train = ml_collections.ConfigDict(dict(
      num_steps=1000,
      batch_size=128,           # Global batch, over every process and device.
      micro_batches=1,          # Gradient accumulation: the batch is processed in this many pieces.
      log_every=100,
      checkpoint_every=1000,
      sample_every=0,           # 0: sample images only at the end of training.
      max_to_keep=3,
      resume_step=0,            # 0: continue (or eval) from the newest readable checkpoint; N: from step N.
      seed=0,
      param_dtype='float32',
      compute_dtype='float32',  # 'bfloat16' for mixed precision on accelerators.
      tensorboard=True,
  ))
  config.lora = ml_collections.ConfigDict(dict(
      rank=0,                   # > 0: the student trains LoRA factors of this rank over its frozen start (nn/lora.py).
      alpha=0.0,                # The factors' scale is alpha / rank; 0 means alpha = rank (scale 1).
      targets=(),               # Module names to adapt (diffusers' names); () = the network's default (sd_unet:
                                # diffusers' LCM-LoRA list).
  ))
  config.mesh = ml_collections.ConfigDict(dict(
      data=1,
      fsdp=1,
      fsdp_min_size=2 ** 14,    # Parameters with fewer elements stay replicated.
      num_processes=1,          # > 1: multi-host with the fields below; 0: detect the cluster (TPU pod, SLURM).
      process_id=0,
      coordinator_address='',   # 'host:port' of process 0.
      offload='',               # Parts of the state kept in host memory between steps: 'ema', 'frozen' or
                                # 'ema,frozen' (docs/scaling.md#host-offload).
  ))
  config.eval = ml_collections.ConfigDict(dict(
      nfe=(1, 2, 4, 8),
      num_samples=1000,
      params='params',          # 'params' or an EMA copy, e.g. 'ema_0.999'.
      sample_grid=64,           # Images in each samples/ grid (or points in each scatter plot x 16).
      seed=1,
      at_end=True,              # Train mode: evaluate once training finishes (datasets with an evaluator).
      grid_file='',             # Stored sampler grids (python -m fewstep_jax.tools.search_sampler_grids): an ODE
                                # sampler samples on the file's grid at each NFE it holds.
      batch_size=256,           # Samples per sampling call (rounded up to a multiple of the device count).
      solvers=(),               # ODE samplers: evaluate with each of these ('euler', 'heun'); () = method.solver.
      metrics=(),               # Keys of evaluate.EVALUATORS ('toy', 'digits', 'inception', 'dinov2'); () = the
                                # dataset's.
      inception='',             # FID Inception-v3 weights (.pth, .safetensors or converted .npz), for 'inception'.
      reference_stats='',       # The dataset's Inception statistics (.npz with mu, sigma), for FID.
      inception_resolution=299, # Images are resized to this before the Inception (299 for papers' numbers).
      dinov2='',                # DINOv2 ViT-L/14 weights (.pth, .safetensors or converted .npz), for 'dinov2'.
      dinov2_reference_stats='',  # The dataset's DINOv2 statistics (.npz), for FD-DINOv2.
      clip='',                  # A transformers CLIP model folder (ViT-L/14 or ViT-g/14), for 'clip_score'.
  ))
  if config.optim.ema_rates:
    config.eval.params = ema_name(config.optim.ema_rates[0])
  # Locked before any experiment file edits it: `config.train.num_stepz = 50` raises, naming the closest field.
  config.lock()
  return config


class ConfigKeyError(KeyError):
  """A config key that does not exist; the message names the closest known field."""

  def __str__(self):
    return str(self.args[0])


# Names users reach for that the config spells differently.
_ALIASES = {'learning_rate': 'lr', 'steps': 'num_steps', 'batch': 'batch_size', 'ema': 'ema_rates'}


def _closest(name: str, known) -> str:
  known = list(known)
  match = [_ALIASES[name]] if _ALIASES.get(name) in known else difflib.get_close_matches(name, known, n=1, cutoff=0.6)
  return f'did you mean {match[0]!r}? ' if match else ''


def config_node(config: ml_collections.ConfigDict, dotted: str):
  """(parent ConfigDict, leaf name) of the field `dotted` ('train.num_steps'); a ConfigKeyError naming the closest
  known field if any part of the path does not exist."""
  *parents, leaf = dotted.split('.')
  node, path = config, []
  for name in parents + [leaf]:
    if not isinstance(node, ml_collections.ConfigDict):
      raise ConfigKeyError(f'unknown config key {dotted!r}: {".".join(path)} is a value, not a block of fields')
    if name not in node:
      where = '.'.join(path) or 'the config'
      known = sorted(node.keys())
      prefix = '.'.join(path + [''])
      raise ConfigKeyError(
          f'unknown config key {dotted!r}: {where} has no field {name!r}; '
          + _closest(name, known).replace("'", "'" + prefix, 1) + f'the fields of {where} are {known}')
    if name != leaf:
      node = node[name]
    path.append(name)
  return node, leaf


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict | None) -> ml_collections.ConfigDict:
  """Sets {'train.num_steps': 10, ...} on `config` in place; unknown keys are ConfigKeyErrors."""
  for dotted, value in (overrides or {}).items():
    node, leaf = config_node(config, dotted)
    node[leaf] = value
  return config


# Fields renamed since runs were written: (block, old name, new name).
RENAMED_FIELDS = (('eval', 'schedule', 'grid_file'),)


def config_from_json(tree: dict) -> ml_collections.ConfigDict:
  """A run's stored config.json back as a locked ConfigDict, with its lists as the tuples the config files
  wrote (JSON has no tuples). Fields the stored config lacks (hyperparameters added to the code after the run was
  trained) take their current defaults, which keep the behaviour the run was trained with."""
  def tuples(value):
    if isinstance(value, dict):
      return {key: tuples(item) for key, item in value.items()}
    if isinstance(value, list):
      return tuple(tuples(item) for item in value)
    return value

  def with_defaults(stored, defaults):
    merged = dict(stored)
    for key, value in defaults.items():
      if key not in merged:
        merged[key] = value
      elif isinstance(value, dict) and isinstance(merged[key], dict):
        merged[key] = with_defaults(merged[key], value)
    return merged

  stored = tuples(tree)
  for block, old, new in RENAMED_FIELDS:  # Written under an earlier name.
    if old in stored.get(block, {}):
      stored[block][new] = stored[block].pop(old)
  try:
    defaults = base_config(method=stored['method']['name'], network=stored['network']['name'],
                           dataset=stored['data']['name']).to_dict()
  except (KeyError, ValueError, TypeError):  # A config of names this code does not know: as stored.
    defaults = {}
  config = ml_collections.ConfigDict(with_defaults(stored, defaults))
  config.lock()
  return config


def load_config(path: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """Loads configs/<dataset>/<method>.py, applies {'train.num_steps': 10, ...} and locks it (for notebooks and
  tests; the command line does the same through --config and --config.a.b=value)."""
  import importlib.util
  spec = importlib.util.spec_from_file_location('experiment_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.lock()
  return apply_overrides(config, overrides)


def load_sibling(config_file: str, name: str = 'common'):
  """The module `name`.py in the folder of the config file `config_file` (pass `__file__`): the settings every
  experiment file of that dataset shares (configs/<dataset>/common.py). Config files are loaded by path, not as a
  package, so they read their sibling by path too."""
  import importlib.util
  import os
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'fewstep_configs_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
