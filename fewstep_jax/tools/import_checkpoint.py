"""Imports a published network as a fewstep_jax run directory that serves as a teacher or a starting point.

  python -m fewstep_jax.tools.import_checkpoint --src=edm-cifar10-32x32-cond-vp.pkl --out=teachers/edm_cifar10_cond
  python -m fewstep_jax.tools.import_checkpoint --src=edm2-img64-s-1073741-0.075.pkl --out=teachers/edm2_img64_s
  python -m fewstep_jax.tools.import_checkpoint --src=SiT-XL-2-256x256.pt --arch=sit_xl_2 --out=teachers/sit_xl_2
  python -m fewstep_jax.tools.import_checkpoint --src=model.safetensors --arch=edm_cifar10_ddpmpp --out=DIR
  python -m fewstep_jax.tools.import_checkpoint --src=edm_imagenet64_ema.pt --arch=cm_imagenet64 \\
      --out=teachers/cm_imagenet64
  python -m fewstep_jax.tools.import_checkpoint --src=net.pt --arch=SongUNet --network.model_channels=64 \\
      --network.channel_mult='(1, 2)' --network.attn_resolutions='(8,)' --out=DIR
  python -m fewstep_jax.tools.import_checkpoint --src=stable-diffusion-v1-5 --out=teachers/sd15

Ported: EDM's SongUNet (DDPM++ / NCSN++) and DhariwalUNet (ADM), EDM2's U-Net and the consistency-models code's
UNetModel (its EDM-trained ImageNet-64 teacher), read through the `edm` readout; SiT (`sit` readout, a velocity in
SiT's time) and DiT (the same network, `dit` readout, an epsilon at DDPM's timesteps). An NVlabs network pickle
records its own hyper-parameters (the constructor arguments of its preconditioning and network), so `--arch` is
needed only for bare state dicts (.pt / .pth / .safetensors / .npz), where it names one of `PRESETS` or a network
class of `ARCHITECTURES` (at the project's defaults for that network), and `--network.FIELD=VALUE` overrides any of
the network's fields (those of `nn.network_defaults`, as `--config.network.FIELD` in a run); the label count,
augmentation labels and image shape are read off the weights' shapes (CM's U-Net records no image size: its preset
carries it, or `--image_size`). Nothing in the file is run: PyTorch files go through `fewstep_jax.weight_files`'
restricted unpickler, and PyTorch need not be installed; a file that would run code when loaded is refused, in one
line that names what it would call.

Stable Diffusion's U-Net (diffusers' UNet2DConditionModel, `nn.sd_unet`) is read from a downloaded pipeline folder
(holding unet/) or its unet/ folder, which needs no --arch (a weights file beside its config.json needs
`--arch=sd_unet`): the network is 'sd_unet' at the preset whose network the config.json builds (sd15, sd21_v,
sdxl_base, digits; a config.json of another width of text condition sets `network.cross_attention_dim`, one of
another structure is refused naming the first key that differs); the data are its latents (sample_size,
sample_size, in_channels) without labels. Its readout is 'sd' (epsilon) or 'sd_v' (v): the `prediction_type` of the
pipeline's scheduler/scheduler_config.json, else the preset's (sd21_v predicts v), `--readout` overriding both. Both
readouts assume SD's training schedule (paths.SD_SCHEDULE, scaled-linear betas 0.00085 to 0.012 over 1000 steps): a
scheduler config with another is refused.

The output directory holds what `runs.open_teacher` and `method.init_from` read: `config.json` (the network config
and `eval.params = 'params'`), `run_info.json` (data shape, label count, the readout the network was trained with)
and an Orbax checkpoint of the parameters, so that later loads need neither the original file nor PyTorch:

  --config.method.teacher=teachers/edm_cifar10_cond

Every parameter of the network must be in the file with its exact shape; anything missing, misshapen or left over is
an error that names it.
"""
import dataclasses
import functools
import json
import math
import os
import shutil
import sys

from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np
from flax import traverse_util

from fewstep_jax import cli, errors, nn, paths, runs
from fewstep_jax import weight_files as weights
from fewstep_jax.nn import cm_unet, edm_unets, sd_unet, sit
from fewstep_jax.train import files
from fewstep_jax.train.checkpoint import Checkpointer


@dataclasses.dataclass(frozen=True)
class Architecture:
  """How the checkpoints of one network class map onto the project's network `network_name`: `torch_name` turns a
  flax parameter path into the checkpoint's key, and `constants` are the checkpoint's buffers that the port computes
  itself ({key suffix: fn(network config) -> expected array}), checked and dropped on import."""
  network_name: str
  torch_name: callable
  constants: dict


def _resample_filter_buffer(network: ml_collections.ConfigDict) -> np.ndarray:
  return edm_unets.resample_filter(network.get('resample_filter', (1, 1)))[None, None]


ARCHITECTURES = {
    'SongUNet': Architecture('edm_songunet', edm_unets.torch_name, {'resample_filter': _resample_filter_buffer}),
    'DhariwalUNet': Architecture('edm_dhariwalunet', edm_unets.torch_name,
                                 {'resample_filter': _resample_filter_buffer}),
    'EDM2UNet': Architecture('edm2_unet', edm_unets.torch_name, {}),
    'SiT': Architecture('sit', sit.torch_name, {}),
    'DiT': Architecture('sit', sit.torch_name, {}),  # SiT's network; DiT's checkpoints differ in what they predict.
    'UNetModel': Architecture('cm_unet', cm_unet.torch_name, {}),  # openai/consistency_models cm/unet.py.
}

@dataclasses.dataclass(frozen=True)
class Preconditioning:
  """An NVlabs preconditioning class: `parameters` are its constructor's named parameters in order, as NVlabs' code
  declares them (a pickle records positional arguments by position: these name them); the first `own` of them are
  the preconditioning's own (no network field; the rest and its **kwargs are the network's); `network_class(args)`
  is the class of the network inside, from the recorded arguments."""
  parameters: tuple
  own: int
  network_class: callable


# Both are EDM's preconditioning (paths.edm_denoiser, c_noise = ln(sigma) / 4); use_fp16 picks PyTorch's compute
# dtype (here train.compute_dtype).
PRECONDITIONINGS = {
    # NVlabs/edm training/networks.py: EDMPrecond(img_resolution, img_channels, label_dim=0, use_fp16=False,
    # sigma_min=0, sigma_max=inf, sigma_data=0.5, model_type='DhariwalUNet', **model_kwargs).
    'EDMPrecond': Preconditioning(('img_resolution', 'img_channels', 'label_dim', 'use_fp16', 'sigma_min',
                                   'sigma_max', 'sigma_data', 'model_type'), 8,
                                  lambda args: args.get('model_type', 'DhariwalUNet')),
    # NVlabs/edm2 training/networks_edm2.py: Precond(img_resolution, img_channels, label_dim, use_fp16=True,
    # sigma_data=0.5, logvar_channels=128, **unet_kwargs); logvar_channels is the network's here.
    'Precond': Preconditioning(('img_resolution', 'img_channels', 'label_dim', 'use_fp16', 'sigma_data',
                                'logvar_channels'), 5, lambda args: 'EDM2UNet'),
}
# EDM2's arguments whose None (choose automatically / no clipping) is 0 here.
_NONE_IS_ZERO = ('channel_mult_noise', 'channel_mult_emb', 'clip_act')

# The published networks, by the hyper-parameters of EDM's train.py (--arch, and its dataset-dependent dropout);
# for importing bare state dicts. Labels, augmentation labels and image shape come from the weights.
PRESETS = {
    'edm_cifar10_ddpmpp': ('SongUNet', dict(
        model_channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,), dropout=0.13,
        embedding_type='positional', channel_mult_noise=1, encoder_type='standard', decoder_type='standard',
        resample_filter=(1, 1))),
    'edm_cifar10_ncsnpp': ('SongUNet', dict(
        model_channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,), dropout=0.13,
        embedding_type='fourier', channel_mult_noise=2, encoder_type='residual', decoder_type='standard',
        resample_filter=(1, 3, 3, 1))),
    'edm_imagenet64_adm': ('DhariwalUNet', dict(
        model_channels=192, channel_mult=(1, 2, 3, 4), num_blocks=3, attn_resolutions=(32, 16, 8), dropout=0.10)),
    # EDM2's train_edm2.py presets: model_channels and dropout per size (the rest are its class defaults).
    **{f'edm2_img64_{size}': ('EDM2UNet', dict(model_channels=channels, dropout=dropout))
       for size, channels, dropout in (('xs', 128, 0.0), ('s', 192, 0.0), ('m', 256, 0.1), ('l', 320, 0.1),
                                       ('xl', 384, 0.1))},
    **{f'edm2_img512_{size}': ('EDM2UNet', dict(model_channels=channels, dropout=dropout))
       for size, channels, dropout in (('xxs', 64, 0.0), ('xs', 128, 0.0), ('s', 192, 0.0), ('m', 256, 0.1),
                                       ('l', 320, 0.1), ('xl', 384, 0.1), ('xxl', 448, 0.1))},
    # SiT's SiT_models (SiT-XL/2 is sit_xl_2), as its checkpoints were trained: label dropout 0.1, learn_sigma.
    **{f'sit_{name.lower().replace("/", "_")}': ('SiT', dict(depth=depth, hidden_size=hidden, patch_size=patch,
                                                             num_heads=heads))
       for name, (depth, hidden, patch, heads) in sit.SIZES.items()},
    # DiT's DiT_models: the same transformer, read as an epsilon prediction at DDPM's timesteps.
    **{f'dit_{name.lower().replace("/", "_")}': ('DiT', dict(depth=depth, hidden_size=hidden, patch_size=patch,
                                                             num_heads=heads))
       for name, (depth, hidden, patch, heads) in sit.SIZES.items()},
    # CM's EDM teacher edm_imagenet64_ema.pt (scripts/launch.sh: --num_channels 192 --num_res_blocks 3
    # --attention_resolutions 32,16,8 --num_head_channels 64 --resblock_updown True --use_scale_shift_norm True
    # --dropout 0.1 --class_cond True); image_size is the data's side, which its state dict does not record.
    'cm_imagenet64': ('UNetModel', dict(model_channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
                                        attention_ds=(2, 4, 8), num_head_channels=64, use_scale_shift_norm=True,
                                        resblock_updown=True, dropout=0.1, image_size=64)),
}
# The readout each architecture's published checkpoints are read with.
READOUT_OF = {'SongUNet': 'edm', 'DhariwalUNet': 'edm', 'EDM2UNet': 'edm', 'SiT': 'sit', 'DiT': 'dit',
              'UNetModel': 'edm'}


# A diffusers UNet2DConditionModel: a pipeline folder or its unet/ folder (a directory needs no --arch), or a weights
# file beside its config.json with --arch=sd_unet. Its config.json gives the network, its pipeline's scheduler the
# readout.
SD_UNET_ARCH = 'sd_unet'
# diffusers' prediction_type -> the readout of that prediction on SD's schedule.
SD_READOUTS = {'epsilon': 'sd', 'v_prediction': 'sd_v'}
# The presets' predictions when no scheduler config says (SD 2.x at 768 px predicts v; the others epsilon).
SD_PRESET_PREDICTIONS = {'sd21_v': 'v_prediction'}
# The schedule keys a scheduler_config.json may leave out, at diffusers' schedulers' defaults; trained_betas and
# rescale_betas_zero_snr replace or change the schedule, so SD's is theirs at these defaults.
_SCHEDULER_DEFAULTS = {'beta_schedule': 'linear', 'beta_start': 0.0001, 'beta_end': 0.02, 'num_train_timesteps': 1000,
                       'trained_betas': None, 'rescale_betas_zero_snr': False}
_SD_SCHEDULER = {**paths.SD_SCHEDULE, 'trained_betas': None, 'rescale_betas_zero_snr': False}


@dataclasses.dataclass
class Imported:
  """A network read from a file: its config, readout, data shape, label count and parameters."""
  network: ml_collections.ConfigDict
  readout: paths.Readout
  data_shape: tuple
  num_classes: int
  params: dict
  source: str
  readout_from: str = ''  # Where the readout was read, when the file does not say it alone (a diffusers U-Net).


def network_config(class_name: str, fields: dict) -> ml_collections.ConfigDict:
  """The project's network config for the checkpoint class `class_name` with hyper-parameters `fields` (lists become
  tuples); an unknown field is an error naming it."""
  if class_name not in ARCHITECTURES:
    raise ValueError(f'no port of the network class {class_name!r}; known: {sorted(ARCHITECTURES)}')
  config = nn.network_defaults(ARCHITECTURES[class_name].network_name)
  for key, value in fields.items():
    if value is None and key in _NONE_IS_ZERO:
      value = 0
    if key not in config:
      raise ValueError(f'{class_name} argument {key!r} has no counterpart in network '
                       f'{config.name!r}; its fields are {sorted(k for k in config if k != "name")}')
    config[key] = tuple(value) if isinstance(value, list) else value
  return config


def abstract_params(network: ml_collections.ConfigDict, data_shape, num_classes: int) -> dict:
  """The network's parameter shapes (jax.ShapeDtypeStruct pytree), without materialising any weight."""
  return _abstract_params(json.dumps(network.to_dict(), sort_keys=True), tuple(data_shape), int(num_classes))


@functools.lru_cache(maxsize=16)
def _abstract_params(network_json: str, data_shape: tuple, num_classes: int) -> dict:
  module = nn.build_network(ml_collections.ConfigDict(json.loads(network_json)), num_classes=num_classes)
  example = jax.ShapeDtypeStruct((1,) + data_shape, np.float32)
  return jax.eval_shape(lambda: nn.init_params(module, jax.random.key(0), example))


def parameter_count(network: ml_collections.ConfigDict, data_shape, num_classes: int) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(abstract_params(network, data_shape, num_classes)))


def to_state_dict(class_name: str, params) -> dict:
  """The checkpoint keys and arrays of a parameter pytree of the port of `class_name` (the inverse of the import)."""
  torch_name = ARCHITECTURES[class_name].torch_name
  return {torch_name(path): np.asarray(value) for path, value in traverse_util.flatten_dict(params).items()}


def from_state_dict(class_name: str, state_dict: dict, network, data_shape, num_classes: int, source: str) -> dict:
  """The parameter pytree of `network` from a checkpoint's state dict, name by name and shape by shape."""
  architecture = ARCHITECTURES[class_name]
  state_dict = dict(state_dict)
  if state_dict and all(key.startswith('model.') for key in state_dict):  # EDMPrecond's wrapper around the network.
    state_dict = {key[len('model.'):]: value for key, value in state_dict.items()}
  for key in [key for key in state_dict if key.rsplit('.', 1)[-1] in architecture.constants]:
    expected = architecture.constants[key.rsplit('.', 1)[-1]](network)
    found = np.asarray(state_dict[key])
    if found.shape != expected.shape or not np.allclose(found, expected):
      raise ValueError(f'{source}: buffer {key} is {np.asarray(state_dict[key]).ravel().tolist()}, but network '
                       f'{network.name!r} with these fields computes {expected.ravel().tolist()}: the checkpoint '
                       'was built with other hyper-parameters')
    del state_dict[key]  # The port computes it.
  flat = traverse_util.flatten_dict(abstract_params(network, data_shape, num_classes))
  by_name = {architecture.torch_name(path): (path, leaf) for path, leaf in flat.items()}
  missing = sorted(set(by_name) - set(state_dict))
  unexpected = sorted(set(state_dict) - set(by_name))
  if missing or unexpected:
    raise ValueError(f'{source} does not match network {network.name!r} with {dict(_fields(network))}: missing '
                     f'{missing[:8]}{" ..." if len(missing) > 8 else ""} ({len(missing)}), unexpected '
                     f'{unexpected[:8]}{" ..." if len(unexpected) > 8 else ""} ({len(unexpected)}). Check --arch '
                     'or the network fields (--network.FIELD=VALUE).')
  params = {}
  for name, (path, leaf) in by_name.items():
    value = np.asarray(state_dict[name])
    if value.shape != tuple(leaf.shape):
      raise ValueError(f'{source}: parameter {name} has shape {value.shape}, but network {network.name!r} expects '
                       f'{tuple(leaf.shape)}; check --arch or the network fields (--network.FIELD=VALUE)')
    params[path] = value.astype(leaf.dtype)
  return traverse_util.unflatten_dict(params)


def _fields(network):
  return {key: value for key, value in network.items() if key != 'name'}


def read_nvlabs_pickle(path: str, entry: str = 'ema') -> Imported:
  """An EDM or EDM2 training snapshot / published network pickle: {'ema': EDMPrecond(...) or Precond(...), ...}, or
  the network itself."""
  from fewstep_jax.weight_files import torch_files
  loaded = weights.read_torch_file(path)
  precond = loaded.get(entry) if isinstance(loaded, dict) else loaded
  if not isinstance(precond, torch_files.ModuleStub):
    raise ValueError(f'{path} holds no network under {entry!r} (top-level keys: '
                     f'{sorted(loaded) if isinstance(loaded, dict) else type(loaded).__name__})')
  class_name = precond.qualified_name.rsplit('.', 1)[-1]
  if class_name not in PRECONDITIONINGS:
    raise ValueError(f'{path}: the network is wrapped in {class_name}; only {sorted(PRECONDITIONINGS)} are ported '
                     '(EDM\'s preconditioning, paths.edm_denoiser). VP/VE/iDDPM preconditionings are not.')
  preconditioning = PRECONDITIONINGS[class_name]
  args = torch_files.constructor_arguments(precond, preconditioning.parameters)
  missing = [name for name in ('img_resolution', 'img_channels') if name not in args]
  if missing:
    raise ValueError(f'{path}: {class_name} records no {" or ".join(missing)} among its constructor arguments '
                     f'({sorted(args)}); the file is damaged or not an NVlabs network pickle')
  model_type = preconditioning.network_class(args)
  data_shape = (int(args['img_resolution']), int(args['img_resolution']), int(args['img_channels']))
  num_classes = int(args.get('label_dim', 0))
  own = preconditioning.parameters[:preconditioning.own]
  network = network_config(model_type, {key: value for key, value in args.items() if key not in own})
  params = from_state_dict(model_type, torch_files.state_dict(precond), network, data_shape, num_classes, path)
  readout = paths.readout('edm', float(args.get('sigma_data', paths.SIGMA_DATA)))
  return Imported(network, readout, data_shape, num_classes, params, os.path.abspath(path))


# Preset entries that describe the data, not the network: CM's U-Net's weights do not record its image side.
DATA_FIELDS = ('image_size',)


def architecture(arch: str) -> tuple:
  """(checkpoint class name, fields) of `arch`: a key of PRESETS, or a class of ARCHITECTURES (no fields: the
  network's defaults)."""
  if arch in PRESETS:
    return PRESETS[arch]
  if arch in ARCHITECTURES:
    return arch, {}
  raise ValueError(f'--arch={arch!r} is not a known network; use {ARCH_CHOICES}')


ARCH_CHOICES = (f'a preset ({", ".join(sorted(PRESETS))}) or a network class ({", ".join(sorted(ARCHITECTURES))}), '
                f'whose fields --network.FIELD=VALUE overrides; or {SD_UNET_ARCH} (a diffusers U-Net folder)')


def arch_network(arch: str) -> ml_collections.ConfigDict:
  """The network config that `arch` describes (see `architecture`): what --network.* overrides."""
  class_name, fields = architecture(arch)
  return network_config(class_name, {key: value for key, value in fields.items() if key not in DATA_FIELDS})


def read_state_dict_file(path: str, arch: str, fields: dict | None = None) -> Imported:
  """A bare state dict of the network `arch` (see `architecture`), its fields overridden by `fields` (the network's
  fields, and image_size for CM's U-Net); labels and shapes are read off the weights."""
  class_name, preset = architecture(arch)
  fields = dict(preset, **(fields or {}))
  state_dict = weights.read_state_dict(path, module='ema' if path.endswith('.pkl') else None)
  if class_name in ('SiT', 'DiT'):
    data_shape, num_classes = _sit_data(state_dict, fields, path)
  elif class_name == 'UNetModel':
    data_shape, num_classes, fields = _cm_data(state_dict, fields, path)
  else:
    data_shape, num_classes, fields = _edm_data(state_dict, class_name, fields, path)
  network = network_config(class_name, fields)
  params = from_state_dict(class_name, state_dict, network, data_shape, num_classes, path)
  return Imported(network, paths.readout(READOUT_OF[class_name]), data_shape, num_classes, params,
                  os.path.abspath(path))


def _edm_data(state_dict, class_name, fields, path):
  """(data shape, label count, fields with augment_dim) of an EDM / EDM2 state dict, from its weights' shapes."""
  edm2 = class_name == 'EDM2UNet'
  inner = 'unet.' if edm2 else 'model.'  # The network's keys inside its preconditioning wrapper.
  shapes = {(key[len(inner):] if key.startswith(inner) else key): np.shape(value) for key, value in state_dict.items()}
  first_conv = [key for key in shapes if key.startswith('enc.') and key.endswith('_conv.weight')]
  if len(first_conv) != 1:
    raise ValueError(f'{path} is not a {class_name} state dict (no single enc.<res>x<res>_conv.weight)')
  resolution = int(first_conv[0][len('enc.'):].split('x', 1)[0])
  # EDM2 appends a channel of ones to its input.
  data_shape = (resolution, resolution, int(shapes[first_conv[0]][1]) - (1 if edm2 else 0))
  label = 'emb_label.weight' if edm2 else 'map_label.weight'
  num_classes = int(shapes[label][1]) if label in shapes else 0
  if not edm2:
    fields = dict(fields, augment_dim=int(shapes['map_augment.weight'][1]) if 'map_augment.weight' in shapes else 0)
  return data_shape, num_classes, fields


def _cm_data(state_dict, fields, path):
  """(data shape, label count, network fields) of a CM UNetModel state dict: the first convolution gives the
  channels, the label table the classes; the side is fields['image_size'] (a convolutional network's weights do
  not record it)."""
  fields = dict(fields)
  side = fields.pop('image_size', None)
  if not side:
    raise ValueError(f'{path}: a UNetModel state dict does not record its image size; use a preset (--arch='
                     'cm_imagenet64) or give it (--image_size=SIDE)')
  if 'input_blocks.0.0.weight' not in state_dict:
    raise ValueError(f'{path} is not a UNetModel state dict (no input_blocks.0.0.weight)')
  channels = int(np.shape(state_dict['input_blocks.0.0.weight'])[1])
  classes = int(np.shape(state_dict['label_emb.weight'])[0]) if 'label_emb.weight' in state_dict else 0
  return (int(side), int(side), channels), classes, fields


def _sit_data(state_dict, fields, path):
  """(data shape, label count) of a SiT state dict: the patch embedding gives the channels, the position table the
  token grid, the label table the classes (one row more with label dropout)."""
  for key in ('x_embedder.proj.weight', 'pos_embed', 'y_embedder.embedding_table.weight'):
    if key not in state_dict:
      raise ValueError(f'{path} is not a SiT state dict (no {key})')
  channels = int(np.shape(state_dict['x_embedder.proj.weight'])[1])
  grid = math.isqrt(int(np.shape(state_dict['pos_embed'])[1]))
  rows = int(np.shape(state_dict['y_embedder.embedding_table.weight'])[0])
  side = grid * int(fields.get('patch_size', 2))
  return (side, side, channels), rows - (1 if fields.get('class_dropout_prob', 0.1) > 0 else 0)


def read_diffusers_unet(src: str, readout: str | None = None) -> Imported:
  """A diffusers UNet2DConditionModel (a pipeline folder, its unet/ folder, or a weights file beside config.json) as
  the registry's 'sd_unet' at the preset its config.json builds; data shape (sample_size, sample_size, in_channels)
  of its latents, no labels. The readout is `readout` ('sd' or 'sd_v'), else the prediction_type of the pipeline's
  scheduler/scheduler_config.json, else the preset's (SD_PRESET_PREDICTIONS)."""
  weights_path, config_path = sd_unet.find_files(src)
  if config_path is None:
    raise errors.ConfigError(f'{weights_path} has no config.json beside it, which gives the U-Net\'s structure: pass '
                             'the unet/ folder of a downloaded diffusers pipeline')
  config = sd_unet.read_config(config_path)
  preset, width = sd_unet.matching_preset(config, source=config_path)
  guidance = int(config.get('time_cond_proj_dim') or 0)  # An LCM U-Net's guidance-scale embedding.
  network = nn.network_defaults('sd_unet')
  network.update(preset=preset, cross_attention_dim=width, guidance_embedding=guidance)
  unet = sd_unet.from_config(preset, **({'cross_attention_dim': width} if width else {}),
                             **({'time_cond_proj_dim': guidance} if guidance else {}))
  _, params = sd_unet.load(weights_path, unet)
  name, readout_from = _sd_readout(os.path.dirname(os.path.dirname(os.path.abspath(weights_path))), preset, readout)
  side = config.get('sample_size') or sd_unet.PRESETS[preset]['sample_size']
  height, width = (side, side) if isinstance(side, int) else side
  return Imported(network, paths.readout(name), (int(height), int(width), unet.in_channels), 0, params,
                  os.path.abspath(src), readout_from)


def _sd_readout(pipeline: str, preset: str, readout: str | None) -> tuple[str, str]:
  """(readout name, where it was read) of a U-Net in the pipeline folder `pipeline` (see read_diffusers_unet); a
  scheduler there whose training schedule is not SD's is refused, since both readouts assume it."""
  path = os.path.join(pipeline, 'scheduler', 'scheduler_config.json')
  scheduler = sd_unet.read_json(path) if os.path.isfile(path) else None
  if scheduler is not None:
    _check_sd_schedule(scheduler, path)
  if readout:
    return readout, '--readout'
  if scheduler is None:
    return SD_READOUTS[SD_PRESET_PREDICTIONS.get(preset, 'epsilon')], (
        f'the preset {preset!r}: no {path}; --readout=sd or sd_v sets it')
  prediction = scheduler.get('prediction_type', 'epsilon')
  if prediction not in SD_READOUTS:
    known = ' or '.join(f'{key} ({value})' for key, value in SD_READOUTS.items())
    raise errors.ConfigError(f'{path}: prediction_type={prediction!r}; the SD readouts read {known}, and a U-Net that '
                             'predicts anything else has no readout here')
  return SD_READOUTS[prediction], f'{path} (prediction_type {prediction!r})'


def _check_sd_schedule(scheduler: dict, path: str):
  for key, expected in _SD_SCHEDULER.items():
    found = scheduler.get(key, _SCHEDULER_DEFAULTS[key])
    numbers = isinstance(expected, float) and isinstance(found, (int, float))
    if not (math.isclose(found, expected, rel_tol=1e-6) if numbers else found == expected):
      default = '' if key in scheduler else " (diffusers' default)"
      schedule = ', '.join(f'{name}={value!r}' for name, value in paths.SD_SCHEDULE.items())
      raise errors.ConfigError(f'{path}: {key}={found!r}{default}, but the readouts sd and sd_v read SD\'s training '
                               f'schedule ({schedule}); a U-Net trained on another schedule has no readout here')


def write_run(out: str, imported: Imported, compute_dtype: str = 'float32'):
  """Writes `imported` as a run directory (see the module docstring); refuses a directory that holds a run."""
  if os.path.exists(os.path.join(out, runs.RUN_INFO)) or os.path.isdir(os.path.join(out, 'checkpoints')):
    raise FileExistsError(f'{out} already holds a run; choose another --out or remove it')
  created = not os.path.exists(out)
  os.makedirs(out, exist_ok=True)
  try:
    _write_run_files(out, imported, compute_dtype)
  except BaseException:
    # No half-written run: a later import into `out` would find its checkpoints and refuse.
    shutil.rmtree(out if created else os.path.join(out, 'checkpoints'), ignore_errors=True)
    raise


def _write_run_files(out: str, imported: Imported, compute_dtype: str):
  config = {
      'method': {'name': 'imported'},
      'network': imported.network.to_dict(),
      'data': None,  # The distribution is not recorded in the file; students check shape and labels.
      'eval': {'params': 'params'},
      'train': {'compute_dtype': compute_dtype, 'max_to_keep': 1},
      'imported_from': imported.source,
  }
  config = json.loads(json.dumps(config))
  checkpointer = Checkpointer(os.path.join(out, 'checkpoints'), max_to_keep=1)
  try:
    state = {'nets': {'student': {'params': jax.tree.map(np.asarray, imported.params)}}}
    checkpointer.save(0, state, {}, [], config, force=True)
    checkpointer.wait()
  finally:
    checkpointer.close()
  files.write_json(os.path.join(out, 'config.json'), config)
  info = {
      'data_shape': list(imported.data_shape), 'num_classes': int(imported.num_classes),
      'readout': imported.readout.to_json(), 'teaches': True, 'teachers': {},
      'parameters': {'params': runs.parameter_structure(imported.params), 'ema': {}},
  }
  files.write_json(os.path.join(out, runs.RUN_INFO), info, indent=None)


FLAGS = flags.FLAGS
NETWORK_FLAG = '--network.'


def read_source(src: str) -> Imported:
  """The network that --src and the flags describe: a diffusers U-Net folder (or --arch=sd_unet), an NVlabs pickle,
  or a bare state dict of --arch."""
  diffusers = FLAGS.arch == SD_UNET_ARCH or (not FLAGS.arch and os.path.isdir(src))
  if FLAGS.readout and not diffusers:
    raise ValueError(f'--readout sets the readout of a diffusers U-Net (--arch={SD_UNET_ARCH}, or a pipeline or unet/ '
                     'folder as --src); the other networks are read with their architecture\'s')
  if diffusers:
    return read_diffusers_unet(src, FLAGS.readout)
  weights.require_file(src)
  if src.endswith('.pkl') and not FLAGS.arch:
    return read_nvlabs_pickle(src, FLAGS.entry)
  if not FLAGS.arch:
    raise ValueError(f'{src} is a bare state dict: name its network with --arch: {ARCH_CHOICES}')
  image_size = {'image_size': FLAGS.image_size} if FLAGS.image_size else {}
  return read_state_dict_file(src, FLAGS.arch, dict(_fields(FLAGS.network), **image_size))


def main(argv):
  del argv
  src = FLAGS.src
  imported = read_source(src)
  write_run(FLAGS.out, imported, FLAGS.compute_dtype)
  count = sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree.leaves(imported.params))
  preset = f' (preset {imported.network.preset!r})' if 'preset' in imported.network else ''
  print(f'{src}: network {imported.network.name!r}{preset}, {count:,} parameters, data shape {imported.data_shape}, '
        f'{imported.num_classes} classes, readout {imported.readout.name!r} -> {FLAGS.out}')
  if imported.readout_from:
    print(f'readout {imported.readout.name!r} from {imported.readout_from}')
  print(f'use it as --config.method.teacher={FLAGS.out} (or start a student from it: '
        f'--config.method.init_from={FLAGS.out})')


def parse_flags(argv):
  """absl's parsing, with --network.FIELD=VALUE defined on the network that --arch names (its fields depend on it),
  and a bad flag reported in one line."""
  try:
    arch = _arch_flag(argv)
    if arch and arch != SD_UNET_ARCH:
      network = arch_network(arch)
      _check_network_fields(argv, network)
      config_flags.DEFINE_config_dict('network', network, "the network fields of a bare state dict, over --arch's "
                                      '(--network.FIELD=VALUE)')
    elif any(arg.startswith(NETWORK_FLAG) for arg in argv[1:]):
      raise ValueError('--network.FIELD=VALUE sets the fields of a bare state dict\'s network: give --arch (a preset '
                       'or a network class) as well; an NVlabs pickle and a diffusers U-Net (its config.json, --arch='
                       f'{SD_UNET_ARCH}) record their own')
    return FLAGS(argv)
  except (flags.Error, ValueError) as error:
    sys.exit(f'error: {error}')


def _check_network_fields(argv, network: ml_collections.ConfigDict):
  """A --network.FIELD that `network` lacks, named with the fields it has (config_flags would raise a traceback)."""
  for arg in argv[1:]:
    if arg.startswith(NETWORK_FLAG):
      field = arg[len(NETWORK_FLAG):].split('=', 1)[0].split('.', 1)[0]
      if field not in network:
        raise ValueError(f'--network.{field}: network {network.name!r} has no field {field!r}; its fields are '
                         f'{", ".join(sorted(_fields(network)))}')


def _arch_flag(argv) -> str:
  """--arch's value in `argv`, read before the flags that depend on it are defined."""
  peek = flags.FlagValues()
  flags.DEFINE_string('arch', '', '', flag_values=peek)
  peek(argv, known_only=True)
  return peek.arch


if __name__ == '__main__':
  flags.DEFINE_string('src', None, 'the weights file: an NVlabs .pkl, or a state dict (.pt/.pth/.safetensors/.npz); '
                      'or a diffusers pipeline folder or its unet/ folder')
  flags.DEFINE_string('out', None, 'the run directory to write')
  flags.DEFINE_string('arch', '', f'the network of a bare state dict: {ARCH_CHOICES}')
  flags.DEFINE_integer('image_size', 0, "the image side of a bare state dict whose weights do not record it (CM's "
                       'UNetModel); 0: the preset\'s')
  flags.DEFINE_string('entry', 'ema', "the network's key in an NVlabs pickle")
  flags.DEFINE_enum('readout', None, sorted(SD_READOUTS.values()), "a diffusers U-Net's readout, over its "
                    "scheduler's prediction_type: sd (epsilon) or sd_v (v_prediction)")
  flags.DEFINE_enum('compute_dtype', 'float32', sorted(nn.DTYPES), "the teacher's compute dtype in students")
  flags.mark_flags_as_required(['src', 'out'])
  cli.run(main, flags_parser=parse_flags)
