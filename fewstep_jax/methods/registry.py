"""The method registry: configs select a method by `config.method.name`; the trainer never branches on it.

A method file registers its classes with `@register(name)`. A preset (`register_preset`) is a registered class under
another name with other defaults (iCT is CT with iCT's hyperparameters): a paper that changes only numbers needs
no class of its own.
"""
import ml_collections

from fewstep_jax.errors import ConfigError

METHODS = {}   # name -> (class, default overrides)


def register(name: str):
  """Class decorator: registers a Method subclass under `name`."""
  def decorator(cls):
    if name in METHODS:
      raise ValueError(f'method {name!r} is registered twice')
    cls.name = name
    METHODS[name] = (cls, {})
    return cls
  return decorator


def register_preset(name: str, cls, **overrides):
  """Registers `cls` under `name` with its defaults updated by `overrides`."""
  if name in METHODS:
    raise ValueError(f'method {name!r} is registered twice')
  METHODS[name] = (cls, dict(overrides))


def method_class(name: str):
  if name not in METHODS:
    raise ValueError(f'unknown method {name!r}; registered methods: {sorted(METHODS)}')
  return METHODS[name][0]


def method_defaults(name: str) -> ml_collections.ConfigDict:
  """The method's config block: `name` plus every hyperparameter the method reads, with defaults."""
  cls = method_class(name)
  config = ml_collections.ConfigDict({'name': name})
  config.update(cls.defaults())
  config.update(METHODS[name][1])
  return config


def build_method(config, *, data_shape: tuple, num_classes: int, inputs: dict | None = None, conditioning=None):
  """Instantiates the configured method for data of per-example shape `data_shape` with `num_classes` labels (or
  conditioned as `conditioning` says: conditions.Conditioning), with the resolved values of its declared inputs
  (the Teachers; see fewstep_jax.runs)."""
  return method_class(config.method.name)(config, data_shape=data_shape, num_classes=num_classes, inputs=inputs,
                                          conditioning=conditioning)


def require_data_images(config, data):
  """A clear error, before anything is built, where the configured method reads data samples and the data has none
  (`data.has_images` False: a prompt list)."""
  if getattr(data, 'has_images', True) or not method_class(config.method.name).reads_data_images(config):
    return
  raise ConfigError(f'method {config.method.name!r} trains on data images (its batches\' x), and '
                    f'data.latents_dir={config.data.get("latents_dir", "")!r} holds prompts only: use a data-free '
                    'method (sid, sim, dmd2 or dmd with method.gan_weight=0, diff_instruct, f_distill, tdm), or encode '
                    'an image-caption set with encode_latents')
