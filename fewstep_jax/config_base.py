"""Shared config defaults. Every experiment file in configs/ starts from `base_config` and overrides.

Every block is complete (each field the code reads is present with its default), and `base_config` returns the
config locked, so a misspelled key in a config file (`config.train.num_stepz = 50`) or on the command line is an
error naming the closest field, never a silent no-op.
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


def config_from_json(tree: dict) -> ml_collections.ConfigDict:
  """A run's stored config.json back as a locked ConfigDict, with its lists as the tuples the config files
  wrote (JSON has no tuples)."""
  def tuples(value):
    if isinstance(value, dict):
      return {key: tuples(item) for key, item in value.items()}
    if isinstance(value, list):
      return tuple(tuples(item) for item in value)
    return value

  config = ml_collections.ConfigDict(tuples(tree))
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


# sCT / sCD at scale, shared by configs/{cifar10,imagenet64}/{sct,scd}.py, after the sCM paper (Lu & Song, ICLR
# 2025), appendix G.2 and Table 4: the proposal (P_mean, P_std), tangent warmup over 10k steps and tangent
# normalisation c = 0.1 (the method's default). CIFAR-10 (unconditional, as Table 1): RAdam lr 1e-4, betas
# (0.9, 0.99), batch 512, EMA with a 0.5 Mimg half-life (0.5^(512 / 0.5e6) = 0.99929 per step). ImageNet-64
# (Table 4): Adam lr 1e-4, betas (0.9, 0.99), eps 1e-11, inverse-square-root decay from 35k steps, batch 2048,
# 400k steps. Not the paper's: the networks are the codebase's EDM teachers' U-Nets with a log-variance head and
# c_noise(tau) = tau (the paper's ImageNet-64 rows use EDM2 networks, XL for 2.04 / 1.48), one dropout rate at every
# resolution (the paper: 45% at 16 px and below for sCT), and a fixed-rate EMA for ImageNet-64 (the paper: EDM2's
# power EMA, sigma_rel 0.05).
SCM_RECIPES = {
    'cifar10': dict(
        data=dict(tfds_name='cifar10', conditional=False),
        network=dict(channels=128, channel_mult=(2, 2, 2), num_res_blocks=4, attn_resolutions=(16,),
                     dropout=0.2, logvar_head=True, time_scale=1.0),
        method=dict(p_mean=-1.0, p_std=1.4, tangent_warmup_steps=10_000, label_dropout=0.0),
        train=dict(num_steps=400_000, batch_size=512, log_every=100, checkpoint_every=10_000,
                   sample_every=50_000),
        optim=dict(name='radam', lr=1e-4, b1=0.9, b2=0.99, schedule='constant', ema_rates=(0.99929,)),
        eval=dict(params='ema_0.99929', nfe=(1, 2), at_end=False)),
    'imagenet64': dict(
        data=dict(tfds_name='imagenet_resized/64x64'),
        network=dict(channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=3, attn_resolutions=(32, 16, 8),
                     dropout=0.1, logvar_head=True, time_scale=1.0),
        method=dict(p_mean=-1.0, p_std=1.6, tangent_warmup_steps=10_000, label_dropout=0.0),
        train=dict(num_steps=400_000, batch_size=2048, log_every=100, checkpoint_every=5_000,
                   sample_every=50_000, compute_dtype='bfloat16'),
        optim=dict(name='adam', lr=1e-4, b1=0.9, b2=0.99, eps=1e-11, schedule='inverse_sqrt', warmup_steps=0,
                   decay_ref_steps=35_000, ema_rates=(0.9999,)),
        eval=dict(params='ema_0.9999', nfe=(1, 2), at_end=False)),
}


def scm_recipe(config: ml_collections.ConfigDict, dataset: str) -> ml_collections.ConfigDict:
  """The sCT / sCD setup for `dataset` (a key of SCM_RECIPES), in place, on a config from `base_config`."""
  if dataset not in SCM_RECIPES:
    raise ValueError(f'no sCM recipe for {dataset!r}; known: {sorted(SCM_RECIPES)}')
  for section, values in SCM_RECIPES[dataset].items():
    config[section].update(values)
  return config


# CD / CT / iCT / ECT at scale, shared by configs/{cifar10,imagenet64}/{cd,ct,ict,ect}.py. The networks are the
# codebase's EDM teachers' U-Nets (c_noise = ln(sigma) / 4), so that CD's teacher and ECT's init run fit; dropout
# may differ from the teacher's (it changes no parameter). CIFAR-10 is unconditional in all four papers, so these
# runs and their teacher (`configs/cifar10/edm.py --config.data.conditional=False`, workdir runs/cifar10_edm_uncond)
# drop the labels. CM (Song et al. 2023, Table 3 and appendix C): RAdam without warmup or decay; CIFAR-10 batch 512,
# lr 4e-4, EMA 0.9999, CD with the online network as its target (mu = 0) and CT with mu(k) from mu0 = 0.9;
# ImageNet-64 batch 2048, lr 8e-6, EMA 0.999943, CD target mu = 0.95; CD starts from the teacher's weights; LPIPS;
# the 2-step levels are the official scripts/launch.sh `--ts` (CD 0,22,39 of 40: sigma 1.382; CT 0,106,200 of
# 201: sigma 1.913; CIFAR-10 0.821). iCT: batch 1024 / 4096, RAdam lr 1e-4, dropout 0.3 / 0.2, EMA 0.99993 /
# 0.99997. ECT: batch 128, RAdam lr 1e-4, dropout 0.2, EMA 0.9999, a stage per 25k steps; on ImageNet-64 the
# official imgnet branch's loss settings (P_mean -0.8, P_std 1.6, pseudo-Huber c = 0.06, q = 4, EDM's weighting).
# ECT's ImageNet-64 optimizer is this codebase's choice (the paper's Adam lr 1e-3 is for EDM2's magnitude-preserving
# networks): batch 1024 with a stage per 3125 steps keeps the paper's images per stage.
CONSISTENCY_NETWORKS = {
    'cifar10': dict(channels=128, channel_mult=(2, 2, 2), num_res_blocks=4, attn_resolutions=(16,),
                    dropout=0.0, time_scale=250.0),
    'imagenet64': dict(channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=3, attn_resolutions=(32, 16, 8),
                       dropout=0.0, time_scale=250.0),
}
CONSISTENCY_DATA = {'cifar10': 'cifar10', 'imagenet64': 'imagenet_resized/64x64'}
CONSISTENCY_RECIPES = {
    ('cd', 'cifar10'): dict(
        method=dict(num_scales=18, target_ema='none', distance='lpips', teacher='runs/cifar10_edm_uncond',
                    init_from='runs/cifar10_edm_uncond'),
        train=dict(num_steps=800_000, batch_size=512), optim=dict(name='radam', lr=4e-4, ema_rates=(0.9999,))),
    ('ct', 'cifar10'): dict(
        method=dict(s0=2, s1=150, mu0=0.9, distance='lpips'),
        train=dict(num_steps=800_000, batch_size=512), optim=dict(name='radam', lr=4e-4, ema_rates=(0.9999,))),
    ('ict', 'cifar10'): dict(
        network=dict(dropout=0.3), method=dict(s0=10, s1=1280),
        train=dict(num_steps=400_000, batch_size=1024), optim=dict(name='radam', lr=1e-4, ema_rates=(0.99993,))),
    ('ect', 'cifar10'): dict(
        network=dict(dropout=0.2), method=dict(init_from='runs/cifar10_edm_uncond', stage_steps=25_000),
        train=dict(num_steps=400_000, batch_size=128), optim=dict(name='radam', lr=1e-4, ema_rates=(0.9999,))),
    ('cd', 'imagenet64'): dict(
        method=dict(num_scales=40, mu0=0.95, distance='lpips', teacher='runs/imagenet64_edm',
                    init_from='runs/imagenet64_edm', sample_sigmas=(1.382,)),
        train=dict(num_steps=600_000, batch_size=2048),
        optim=dict(name='radam', lr=8e-6, ema_rates=(0.999943,))),
    ('ct', 'imagenet64'): dict(
        method=dict(s0=2, s1=200, mu0=0.95, distance='lpips', sample_sigmas=(1.913,)),
        train=dict(num_steps=800_000, batch_size=2048),
        optim=dict(name='radam', lr=8e-6, ema_rates=(0.999943,))),
    ('ict', 'imagenet64'): dict(
        network=dict(dropout=0.2), method=dict(s0=10, s1=1280),
        train=dict(num_steps=800_000, batch_size=4096), optim=dict(name='radam', lr=1e-4, ema_rates=(0.99997,))),
    ('ect', 'imagenet64'): dict(
        network=dict(dropout=0.1),
        method=dict(init_from='runs/imagenet64_edm', stage_steps=3125, q=4.0, weighting='edm', p_mean=-0.8,
                    p_std=1.6, huber_c=0.06),
        train=dict(num_steps=100_000, batch_size=1024), optim=dict(name='radam', lr=1e-4, ema_rates=(0.9999,))),
}


def consistency_recipe(config: ml_collections.ConfigDict, dataset: str) -> ml_collections.ConfigDict:
  """The CD / CT / iCT / ECT setup of config.method.name on `dataset` ('cifar10' | 'imagenet64'), in place."""
  key = (config.method.name, dataset)
  if key not in CONSISTENCY_RECIPES:
    raise ValueError(f'no consistency recipe for {key}; known: {sorted(CONSISTENCY_RECIPES)}')
  recipe = CONSISTENCY_RECIPES[key]
  config.data.tfds_name = CONSISTENCY_DATA[dataset]
  config.data.conditional = dataset != 'cifar10'  # The papers' CIFAR-10 models are unconditional.
  config.network.update(CONSISTENCY_NETWORKS[dataset])
  config.train.update(log_every=100, checkpoint_every=10_000, sample_every=50_000)
  if dataset == 'imagenet64':
    config.train.compute_dtype = 'bfloat16'
  for section, values in recipe.items():
    config[section].update(values)
  rate = config.optim.ema_rates[0]
  config.eval.update(params=ema_name(rate), nfe=(1, 2), at_end=False)
  return config


# Score distillation, shared by configs/<dataset>/{dmd2,dmd,diff_instruct,sid,sim,tdm}.py. The
# student and the critic start from the teacher, so each dataset's network is its EDM teacher's
# (configs/<dataset>/edm.py) and `method.teacher` names that run. `optim` is the student's optimizer and
# `critic_optim` the critic's (and GAN head's).
DISTILLATION_SETUPS = {
    'toy': dict(
        data=dict(toy='8gaussians'),
        network=dict(hidden=256, depth=3, time_scale=250.0),
        method=dict(teacher='runs/toy_edm'),
        train=dict(num_steps=4000, batch_size=256, log_every=200, checkpoint_every=2000),
        optim=dict(name='adam', lr=1e-4, b1=0.0, b2=0.99, ema_rates=(0.999,)),
        critic_optim=dict(name='adam', lr=1e-4, b1=0.0, b2=0.99),
        eval=dict(params='ema_0.999', nfe=(1,), num_samples=2000)),
    'digits': dict(
        network=dict(channels=24, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), time_scale=250.0),
        method=dict(teacher='runs/digits_edm', teacher_guidance=1.5),
        train=dict(num_steps=1000, batch_size=128, log_every=100, checkpoint_every=500),
        # EMA 0.99: at 0.999 a 1000-step run's average still holds a third of the teacher's weights.
        optim=dict(name='adam', lr=1e-4, b1=0.0, b2=0.99, ema_rates=(0.99,)),
        critic_optim=dict(name='adam', lr=1e-4, b1=0.0, b2=0.99),
        eval=dict(params='ema_0.99', nfe=(1,), num_samples=1000)),
    'cifar10': dict(
        data=dict(tfds_name='cifar10'),
        network=dict(CONSISTENCY_NETWORKS['cifar10']),
        method=dict(teacher='runs/cifar10_edm'),
        train=dict(num_steps=400_000, batch_size=256, log_every=100, checkpoint_every=10_000, sample_every=50_000),
        eval=dict(nfe=(1,), at_end=False)),
    'imagenet64': dict(
        data=dict(tfds_name='imagenet_resized/64x64'),
        network=dict(CONSISTENCY_NETWORKS['imagenet64']),
        method=dict(teacher='runs/imagenet64_edm'),
        train=dict(num_steps=400_000, batch_size=280, log_every=100, checkpoint_every=10_000, sample_every=50_000,
                   compute_dtype='bfloat16'),
        eval=dict(nfe=(1,), at_end=False)),
}

# The papers' optimizers at scale, applied after an EMA of 0.9999 for the student. DMD2 / DMD
# (tianweiy/DMD2, experiments/imagenet/*.sh and main/edm/train_edm.py): AdamW lr 2e-6 for both roles, betas
# (0.9, 0.999), weight decay 0.01, 500 warmup steps, clipping at 10, batch 280, no EMA (the raw generator is
# evaluated); DMD2 reports no CIFAR-10 run, so that config is this codebase's transfer of the same settings; the GAN
# at 1e-2 / 3e-3. SiD / SIM / Diff-Instruct: Adam lr 1e-5, betas (0, 0.999), 1:1, critic first, batch 256. TDM:
# its student at a fifth of the critic's lr (its official code is text-to-image only; the rest is ours).
_DMD_OPTIM = dict(name='adamw', lr=2e-6, b1=0.9, b2=0.999, weight_decay=0.01, schedule='warmup',
                  warmup_steps=500, grad_clip=10.0)
_SID_OPTIM = dict(name='adam', lr=1e-5, b1=0.0, b2=0.999)
DISTILLATION_RECIPES = {
    'dmd2': dict(method=dict(gan_weight=1e-2, gan_generator_weight=3e-3), optim=dict(_DMD_OPTIM, ema_rates=()),
                 critic_optim=_DMD_OPTIM),
    'dmd': dict(method=dict(regression_distance='lpips', regression_pairs='runs/{dataset}_edm_pairs'),
                optim=dict(_DMD_OPTIM, ema_rates=()), critic_optim=_DMD_OPTIM),
    'diff_instruct': dict(optim=_SID_OPTIM, critic_optim=_SID_OPTIM),
    'sid': dict(optim=_SID_OPTIM, critic_optim=_SID_OPTIM),
    'sim': dict(optim=_SID_OPTIM, critic_optim=_SID_OPTIM),
    'tdm': dict(optim=dict(_SID_OPTIM, lr=2e-6), critic_optim=_SID_OPTIM),
}
# The official runs' values that differ between datasets. EMA half-lives h in images become per-step rates
# 0.5^(batch / h). SiD (mingyuanzhou/SiD, run_sid.sh): CIFAR-10 conditional at alpha 1.2 for 800 Mimg (3.125M steps
# of 256), h = 0.5 Mimg; ImageNet-64 lr 4e-6 for both roles, batch 8192, 1000 Mimg, h = 2 Mimg. Diff-Instruct
# (pkulwj1994/diff_instruct, README): unconditional CIFAR-10, batch 128, h = 0.5 Mimg.
DISTILLATION_RUNS = {
    ('sid', 'cifar10'): dict(train=dict(num_steps=3_125_000, batch_size=256), optim=dict(ema_rates=(0.99965,))),
    ('sid', 'imagenet64'): dict(train=dict(num_steps=122_070, batch_size=8192),
                                optim=dict(lr=4e-6, ema_rates=(0.99717,)), critic_optim=dict(lr=4e-6)),
    ('diff_instruct', 'cifar10'): dict(data=dict(conditional=False), method=dict(teacher='runs/cifar10_edm_uncond'),
                                       train=dict(batch_size=128), optim=dict(ema_rates=(0.99982,))),
}


def distillation_recipe(config: ml_collections.ConfigDict, dataset: str) -> ml_collections.ConfigDict:
  """The score-distillation setup of config.method.name on `dataset` (a key of DISTILLATION_SETUPS), in place:
  the dataset's teacher network and run; at scale (cifar10, imagenet64) also the method's DISTILLATION_RECIPES
  and DISTILLATION_RUNS."""
  if dataset not in DISTILLATION_SETUPS:
    raise ValueError(f'no distillation setup for {dataset!r}; known: {sorted(DISTILLATION_SETUPS)}')
  sections = [DISTILLATION_SETUPS[dataset]]
  if dataset in ('cifar10', 'imagenet64'):
    name = config.method.name
    sections += [dict(optim=dict(ema_rates=(0.9999,))), DISTILLATION_RECIPES[name],
                 DISTILLATION_RUNS.get((name, dataset), {})]
  for recipe in sections:
    for section, values in recipe.items():
      if section == 'critic_optim':
        config.method.critic_optim.update(values)
      elif section == 'method':
        config.method.update({k: v.format(dataset=dataset) if isinstance(v, str) else v for k, v in values.items()})
      else:
        config[section].update(values)
  config.eval.params = ema_name(config.optim.ema_rates[0]) if config.optim.ema_rates else 'params'
  return config
