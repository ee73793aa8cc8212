"""Shared config defaults. Every experiment file in configs/ starts from `base_config` and overrides.

Every block is complete (each field the code reads is present with its default), and main.py locks the
config, so a misspelled key on the command line or in a config file is an error, never a silent no-op.
"""
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
      seed=0,
      param_dtype='float32',
      compute_dtype='float32',  # 'bfloat16' for mixed precision on accelerators.
      tensorboard=True,
  ))
  config.mesh = ml_collections.ConfigDict(dict(
      data=1,
      fsdp=1,
      fsdp_min_size=2 ** 14,    # Parameters with fewer elements stay replicated.
      num_processes=1,          # > 1: multi-host with the fields below; 0: detect the cluster (TPU pod, SLURM).
      process_id=0,
      coordinator_address='',   # 'host:port' of process 0.
  ))
  config.eval = ml_collections.ConfigDict(dict(
      nfe=(1, 2, 4, 8),
      num_samples=1000,
      params='params',          # 'params' or an EMA copy, e.g. 'ema_0.999'.
      sample_grid=64,           # Images in each samples/ grid (or points in each scatter plot x 16).
      seed=1,
      at_end=True,              # Train mode: evaluate once training finishes (datasets with an evaluator).
  ))
  if config.optim.ema_rates:
    config.eval.params = ema_name(config.optim.ema_rates[0])
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
  for dotted, value in (overrides or {}).items():
    *parents, leaf = dotted.split('.')
    node = config
    for name in parents:
      node = node[name]
    if leaf not in node:
      raise KeyError(f'unknown config key {dotted!r}; the fields of {".".join(parents) or "the config"} '
                     f'are {sorted(node.keys())}')
    node[leaf] = value
  return config


def toy_recipe(config: ml_collections.ConfigDict, *, two_times: bool) -> ml_collections.ConfigDict:
  """The few-step toy configs' shared setup, in place: a 256-wide 3-layer MLP, 6000 steps of batch 256, Adam
  lr 1e-3 with 200 warmup steps and cosine decay, EMA 0.999, evaluation at 1, 2 and 4 NFE on 2000 samples
  (a minute or two on a laptop CPU)."""
  config.network.hidden = 256
  config.network.depth = 3
  config.network.two_times = two_times
  config.train.update(num_steps=6000, batch_size=256, log_every=200, checkpoint_every=2000)
  config.optim.update(lr=1e-3, schedule='cosine', warmup_steps=200, ema_rates=(0.999,))
  config.eval.update(params='ema_0.999', nfe=(1, 2, 4), num_samples=2000)
  return config


def digits_recipe(config: ml_collections.ConfigDict, *, two_times: bool) -> ml_collections.ConfigDict:
  """The few-step digits configs' shared setup, in place: the teachers' 24-channel U-Net (1-2, one block per
  level, attention at 4 px), 2000 steps of batch 128, Adam lr 2e-3 with 200 warmup steps, cosine decay and
  gradient clipping at 1, EMA 0.999, evaluation at 1, 2 and 4 NFE on 1000 samples (10-20 minutes on 2 CPU
  cores)."""
  config.network.update(channels=24, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                        two_times=two_times)
  config.train.update(num_steps=2000, batch_size=128, log_every=100, checkpoint_every=1000)
  config.optim.update(lr=2e-3, schedule='cosine', warmup_steps=200, grad_clip=1.0, ema_rates=(0.999,))
  config.eval.update(params='ema_0.999', nfe=(1, 2, 4), num_samples=1000)
  return config


# sCT / sCD at scale, shared by configs/{cifar10,imagenet64}/{sct,scd}.py. From METHODS.md §2: the proposal
# (P_mean, P_std), tangent warmup over 10k steps and tangent normalisation c = 0.1 (the method's default);
# the networks are the codebase's EDM teachers' U-Nets with a log-variance head, time input c_noise(tau) = tau.
# Batch, learning rate, EMA and iteration counts are this codebase's choices where METHODS.md is silent.
SCM_RECIPES = {
    'cifar10': dict(
        data=dict(tfds_name='cifar10'),
        network=dict(channels=128, channel_mult=(2, 2, 2), num_res_blocks=4, attn_resolutions=(16,),
                     dropout=0.2, logvar_head=True, time_scale=1.0),
        method=dict(p_mean=-1.0, p_std=1.4, tangent_warmup_steps=10_000, label_dropout=0.0),
        train=dict(num_steps=400_000, batch_size=512, log_every=100, checkpoint_every=10_000,
                   sample_every=50_000),
        optim=dict(name='adam', lr=1e-4, schedule='constant', ema_rates=(0.9999,)),
        eval=dict(params='ema_0.9999', nfe=(1, 2), at_end=False)),
    'imagenet64': dict(
        data=dict(tfds_name='imagenet_resized/64x64'),
        network=dict(channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=3, attn_resolutions=(32, 16, 8),
                     dropout=0.1, logvar_head=True, time_scale=1.0),
        method=dict(p_mean=-1.0, p_std=1.6, tangent_warmup_steps=10_000, label_dropout=0.0),
        train=dict(num_steps=200_000, batch_size=2048, log_every=100, checkpoint_every=5_000,
                   sample_every=50_000, compute_dtype='bfloat16'),
        optim=dict(name='adam', lr=1e-4, schedule='constant', ema_rates=(0.9999,)),
        eval=dict(params='ema_0.9999', nfe=(1, 2), at_end=False)),
}


def scm_recipe(config: ml_collections.ConfigDict, dataset: str) -> ml_collections.ConfigDict:
  """The sCT / sCD setup for `dataset` (a key of SCM_RECIPES), in place, on a config from `base_config`."""
  if dataset not in SCM_RECIPES:
    raise ValueError(f'no sCM recipe for {dataset!r}; known: {sorted(SCM_RECIPES)}')
  for section, values in SCM_RECIPES[dataset].items():
    config[section].update(values)
  return config
