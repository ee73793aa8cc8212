"""Training data behind one interface, selected by `config.data.name` from the `DATASETS` registry.

- 'toy': 2-D distributions sampled inside the jitted step (`kind == 'device'`), see `toy.py`.
- 'digits': the scikit-learn 8x8 digits, built as a local TFDS dataset on first use, see `digits.py`.
- 'digits_text': the same digits with captions of their measured attributes ('a thick, right-leaning seven') as
  text conditions of a tiny frozen CLIP text encoder, see `digits_text.py`.
- 'tfds': any image dataset already prepared by TFDS in `config.data.dir`, see `tfds_images.py`.
- 'reflow_pairs': noise-sample pairs generated from a trained flow, see `ode_pairs.py`.
- 'latents': precomputed VAE latents (ImageNet-256 latent configs), or captioned latents / prompts with their text
  encoders' outputs (text-to-image), see `latents.py`.
- 'pipeline_prompts': no examples, the prompts to sample a diffusers pipeline's teacher at, with its text encoders
  and VAE, see `pipeline_prompts.py`.

`evaluator` names the embedded evaluator that fits the data (eval/evaluate.py): the dataset itself, or for
reflow pairs the dataset the teacher learned.

Image datasets (`kind == 'host'`) are read by the grain pipeline of `pipeline.py`, one shard per JAX process.

`data.dir` (where the digits are built and TFDS datasets are prepared) defaults to a cache directory,
$FEWSTEP_JAX_DATA if set, else ~/.cache/fewstep_jax/data (`data_dir`): never a folder of the current directory, which
could hold data files beside the code or shadow a package of that name.
"""
import abc
import os

import jax
import ml_collections
import numpy as np

from fewstep_jax.conditions import Conditioning
from fewstep_jax.data import digits, digits_text, latents, ode_pairs, pipeline_prompts, tfds_images, toy
from fewstep_jax.data.digits_arrays import to_model_range
from fewstep_jax.data.pipeline import HostBatches, stack_model_batch
from fewstep_jax.errors import ConfigError


def data_defaults() -> ml_collections.ConfigDict:
  """Returns the `config.data` defaults."""
  config = ml_collections.ConfigDict()
  config.name = 'toy'  # A key of DATASETS: 'toy', 'digits', 'digits_text', 'tfds', 'reflow_pairs', 'latents' or
                       # 'pipeline_prompts'.
  config.toy = '8gaussians'  # A key of toy.TOY_SAMPLERS, read when name == 'toy'.
  config.tfds_name = ''  # TFDS name, read when name == 'tfds': e.g. 'cifar10', 'imagenet_resized/64x64'.
  config.dir = ''  # Where the digits are built and TFDS datasets are prepared; '' = `default_data_dir()`.
  config.pairs_dir = ''  # Read when name == 'reflow_pairs': written by python -m fewstep_jax.tools.generate_pairs.
  config.latents_dir = ''  # Read when name == 'latents': latents.npy [N, H, W, C] and labels.npy [N], or the
                           # shards of python -m fewstep_jax.tools.encode_latents (moments, captions, prompts).
  config.text_encoding = 'stored'  # A captioned latents directory's text: 'stored' (the encoders' outputs) or
                                   # 'on_the_fly' (token ids, encoded in the step: encode_latents --text_storage=ids).
  config.latent_scale = 0.18215  # Multiplies the stored latents (SD-VAE's scaling factor), for latent_norm 'scale'.
  config.latent_norm = 'scale'  # latents.LATENT_NORMS: 'scale' (latent_scale; images in [-1, 1]: DiT, SiT,
                                # MeanFlow) | 'edm2' (EDM2's per-channel normalisation; images in [0, 1]).
  config.vae = ''  # SD-VAE weights (diffusers' .safetensors, or a vae/ folder): latent samples are decoded to images
                   # for the sample grids and the image metrics (FID, FD-DINOv2); unset, they are written as .npy
                   # ('pipeline_prompts': unset is the pipeline's vae/).
  config.pipeline = ''  # Read when name == 'pipeline_prompts': a downloaded diffusers pipeline folder (its text
                        # encoders, VAE and latent shape).
  config.prompts_file = ''  # Evaluation prompts (one a line, or JSONL), encoded at startup with the pipeline's text
                            # encoders: the prompts 'pipeline_prompts' samples at; for captioned 'latents', in place
                            # of those encode_latents stored ('' = the stored ones).
  config.conditional = True  # False drops the labels: an unconditional model of a labelled dataset.
  config.image_size = 0  # Square side to resize images to (PIL bicubic); 0 keeps the native size.
  config.reader = 'auto'  # pipeline.READERS: 'memory' (the records read once into host memory, each batch a fancy
                         # index), 'stream' (a batched read per batch), 'grain' (one record at a time, optionally in
                         # worker processes); 'auto': memory if the records fit in memory_gib, else stream, and
                         # grain when worker_count > 0 or the source has no batched read.
  config.memory_gib = 4.0  # The most host memory (GiB, per process) 'auto' gives a dataset held in memory.
  config.worker_count = 0  # grain worker processes (reader 'grain'); 0 reads in the training process.
  config.prefetch = 2  # Batches built ahead in a background thread.
  return config


ENVIRONMENT_VARIABLE = 'FEWSTEP_JAX_DATA'


def default_data_dir() -> str:
  """$FEWSTEP_JAX_DATA, else ~/.cache/fewstep_jax/data (beside the compilation cache, ~/.cache/fewstep_jax/xla)."""
  return os.environ.get(ENVIRONMENT_VARIABLE) or os.path.join(os.path.expanduser('~'), '.cache', 'fewstep_jax', 'data')


def data_dir(config_data) -> str:
  """The directory config_data.dir names ('~' expanded), or `default_data_dir()` when it is empty."""
  return os.path.expanduser(config_data.dir) if config_data.get('dir') else default_data_dir()


class DataPipeline(abc.ABC):
  """What the trainer and the evaluators see of a dataset.

  kind: 'device' (batches are sampled inside the jitted step with `device_sample`) or 'host' (batches come from
  `next_batch`). data_shape: per-example shape, e.g. (2,) or (8, 8, 1). num_classes: 0 for unconditional data.
  conditioning: what a batch's 'y' holds (conditions.Conditioning): its labels by default.
  """

  kind: str
  data_shape: tuple
  num_classes: int

  @property
  def conditioning(self) -> Conditioning:
    return Conditioning.of_labels(self.num_classes)

  def device_sample(self, key, n: int) -> dict:
    """Returns {'x': [n, *data_shape]} sampled on device; jittable with n static. Only for kind 'device'."""
    raise TypeError(f'{type(self).__name__} is read on the host: use next_batch()')

  def next_batch(self) -> dict:
    """Returns this process's next training batch, numpy {'x': float32 [b, *data_shape], 'y': int32 [b]}."""
    raise TypeError(f'{type(self).__name__} is sampled on device: use device_sample(key, n)')

  @abc.abstractmethod
  def get_state(self) -> dict:
    """Returns the JSON-serialisable position of next_batch, for checkpoints."""

  @abc.abstractmethod
  def set_state(self, state: dict) -> None:
    """Restores a position from get_state: the next batches are those that followed it."""

  @abc.abstractmethod
  def reference_samples(self, n: int, split: str, seed: int) -> dict:
    """Returns numpy {'x': float32 [n, *data_shape], 'y': int32 [n] if labelled} from the true distribution."""

  def prompt_texts(self) -> list | None:
    """The evaluation prompts as text, where the data knows them (sample i has prompt i mod N, as
    `Conditioning.for_samples` gives its condition); None otherwise. The CLIP score reads them."""
    return None


class ToyData(DataPipeline):
  """A 2-D distribution with no host-side state: every batch is a pure function of the step's key."""

  kind = 'device'
  data_shape = (2,)
  num_classes = 0

  def __init__(self, sampler, name: str = ''):
    self._sampler = sampler
    self.name = name  # The distribution's key of toy.TOY_SAMPLERS (its geometry: toy.TOY_GEOMETRY).

  def device_sample(self, key, n: int) -> dict:
    return {'x': self._sampler(key, n)}

  def get_state(self) -> dict:
    return {}

  def set_state(self, state: dict) -> None:
    if state:
      raise ConfigError(f'toy data has no state to restore, got {state}')

  def reference_samples(self, n: int, split: str, seed: int) -> dict:
    """Fresh samples from `seed`; `split` is ignored, as a toy distribution has no finite splits."""
    del split
    return {'x': np.asarray(self._sampler(jax.random.key(seed), n))}


def image_arrays_to_batch(arrays: dict) -> dict:
  """{'image': uint8 [b, H, W, C], 'label': [b]} -> the model batch {'x': float32 in [-1, 1], 'y': int32}."""
  return {'x': to_model_range(arrays['image']), 'y': arrays['label'].astype(np.int32)}


class ImageData(HostBatches, DataPipeline):
  """A TFDS image dataset in a local directory: training batches from its 'train' split."""

  def __init__(self, tfds_name: str, config_data, *, global_batch_size: int, seed: int):
    self._builder = tfds_images.prepared_builder(tfds_name, data_dir(config_data))
    self.data_shape, self.num_classes = tfds_images.image_spec(self._builder, config_data.image_size)
    self._record_transforms = (
        (tfds_images.ResizeImage(config_data.image_size),) if config_data.image_size else ())
    records = tfds_images.SplitRecords(tfds_images.open_split(self._builder, 'train'), self.data_shape,
                                       self._record_transforms)
    self._open_batches(records, config_data, global_batch_size=global_batch_size, seed=seed,
                       record_batch_fn=stack_model_batch, arrays_batch_fn=image_arrays_to_batch,
                       record_transforms=self._record_transforms)

  def reference_samples(self, n: int, split: str, seed: int) -> dict:
    """The first min(n, len(split)) examples of a `seed`-permutation of `split`, resized like training data."""
    source = tfds_images.open_split(self._builder, split)
    indices = np.random.default_rng(seed).permutation(len(source))[:n]
    records = [source[int(index)] for index in indices]
    for transform in self._record_transforms:
      records = [transform.map(record) for record in records]
    return stack_model_batch(records)

  def split_images(self, split: str, batch_size: int, limit: int = 0):
    """Yields the images of `split` in order (the first `limit`, or all), float32 [<= batch_size, H, W, C] in
    [-1, 1], resized like training data: for reference statistics."""
    source = tfds_images.open_split(self._builder, split)
    total = len(source) if limit <= 0 else min(limit, len(source))
    for start in range(0, total, batch_size):
      records = [source[index] for index in range(start, min(start + batch_size, total))]
      for transform in self._record_transforms:
        records = [transform.map(record) for record in records]
      yield stack_model_batch(records)['x']


def _build_toy(config_data, *, global_batch_size: int, seed: int) -> DataPipeline:
  del global_batch_size, seed  # The trainer draws each batch on device from the step's own key.
  return ToyData(toy.get_toy_sampler(config_data.toy), config_data.toy)


def _build_digits(config_data, *, global_batch_size: int, seed: int) -> DataPipeline:
  digits.ensure_digits(data_dir(config_data))
  return ImageData(digits.DIGITS_NAME, config_data, global_batch_size=global_batch_size, seed=seed)


def _build_digits_text(config_data, *, global_batch_size: int, seed: int) -> DataPipeline:
  return digits_text.DigitsTextData(config_data, global_batch_size=global_batch_size, seed=seed)


def _build_tfds(config_data, *, global_batch_size: int, seed: int) -> DataPipeline:
  if not config_data.tfds_name:
    raise ConfigError("config.data.tfds_name must name a TFDS dataset when config.data.name == 'tfds'")
  return ImageData(config_data.tfds_name, config_data, global_batch_size=global_batch_size, seed=seed)


def _build_reflow_pairs(config_data, *, global_batch_size: int, seed: int):
  def build_source_data(source_config: dict, batch_size: int):
    source = data_defaults()
    source.update(source_config)
    return build_data(source, global_batch_size=batch_size, seed=seed)
  return ode_pairs.PairData(config_data, global_batch_size=global_batch_size, seed=seed,
                               build_source_data=build_source_data)


def _build_latents(config_data, *, global_batch_size: int, seed: int):
  return latents.LatentData(config_data, global_batch_size=global_batch_size, seed=seed)


def _build_pipeline_prompts(config_data, *, global_batch_size: int, seed: int):
  del global_batch_size, seed  # Nothing is drawn: it holds conditions only.
  return pipeline_prompts.PipelinePromptsData(config_data)


DATASETS = {'toy': _build_toy, 'digits': _build_digits, 'digits_text': _build_digits_text, 'tfds': _build_tfds,
            'reflow_pairs': _build_reflow_pairs, 'latents': _build_latents,
            'pipeline_prompts': _build_pipeline_prompts}


class Unlabelled:
  """A conditioned pipeline seen without its conditions (config.data.conditional=False): num_classes = 0, and
  batches and reference samples without 'y'."""

  num_classes = 0
  conditioning = Conditioning()

  def __init__(self, pipeline):
    self._pipeline = pipeline

  def __getattr__(self, name):
    return getattr(self._pipeline, name)

  def next_batch(self) -> dict:
    return {k: v for k, v in self._pipeline.next_batch().items() if k != 'y'}

  def reference_samples(self, n: int, split: str, seed: int) -> dict:
    return {k: v for k, v in self._pipeline.reference_samples(n, split, seed).items() if k != 'y'}


def build_data(config_data, *, global_batch_size: int, seed: int) -> DataPipeline:
  """Returns the DataPipeline of `config_data` (see data_defaults); image batches are this process's shard."""
  if config_data.name not in DATASETS:
    raise ConfigError(f'Unknown dataset kind {config_data.name!r}; available: {sorted(DATASETS)}')
  pipeline = DATASETS[config_data.name](config_data, global_batch_size=global_batch_size, seed=seed)
  if not hasattr(pipeline, 'evaluator'):
    pipeline.evaluator = config_data.name
  if not config_data.conditional and pipeline.conditioning.conditional:
    pipeline = Unlabelled(pipeline)
  return pipeline
