"""Encodes an image dataset with the SD-VAE into a latents directory of posterior moments (data.name='latents'), and
an image-caption set or a prompt list with a pipeline's text encoders too.

  python -m fewstep_jax.tools.encode_latents --vae=diffusion_pytorch_model.safetensors --out=latents/imagenet256 \
      --tfds_name=imagenet2012 --data_dir=/path/to/tensorflow_datasets --split=train
  python -m fewstep_jax.tools.encode_latents --vae=... --out=... --folder=/path/to/images    # <folder>/<class>/<image>
  python -m fewstep_jax.tools.encode_latents --vae=sdxl/vae/diffusion_pytorch_model.safetensors --out=latents/coco \
      --coco_captions=annotations/captions_train2014.json --coco_images=train2014 --text_encoders=sdxl \
      --image_size=1024 --eval_prompts=prompts.txt
  python -m fewstep_jax.tools.encode_latents --out=latents/prompts --prompts=prompts.txt --text_encoders=sd15 \
      --image_size=512                                                                      # no images: no --vae

Each image is center-cropped to --image_size as DiT's, SiT's and MeanFlow's preprocessing does (ADM's
`center_crop_arr`: halve with a box filter while the short side is at least twice the size, resize bicubically so
that it equals the size, crop the center), scaled to [-1, 1] and encoded; the posterior's mean and std (unscaled)
and the label are stored one record per image in array_record shards of --shard_size images (layout:
`fewstep_jax/data/latents.py`). The batch is sharded over every device; with several processes
(jax.distributed) each encodes the shards whose index is its process index modulo the process count. A shard is
written to a temporary file and renamed when complete, so an interrupted run, started again with the same
arguments (info.json records them, and refuses others), encodes only the shards that are missing. --flip also
stores each image's horizontal mirror (a fixed flip augmentation; the record count doubles). --pixels=unit feeds
the VAE images in [0, 1] as EDM2's StabilityVAEEncoder does (its ImageNet-512 networks read such latents, with
--config.data.latent_norm=edm2); the default, signed, is [-1, 1].

Captions (fewstep_jax/tools/caption_sets.py; exactly one source flag): --captions_folder (img.png with img.txt
beside it, one caption per non-empty line: its own flag, not detected inside --folder's class folders), --jsonl
({"image": path, "caption": str} or "captions": [...] lines, paths relative to the file), --coco_captions with
--coco_images (COCO's captions JSON: about 5 captions an image), or --prompts (prompts alone, no images: the data of
data-free distillation, SiD and DMD2 without its GAN term). An image without a caption, a caption file without an
image, or an image a JSONL names that is missing is refused before anything is encoded, naming the first and the
count. --text_encoders names a downloaded diffusers pipeline folder (fewstep_jax.text.load_pipeline): SD 1.5's
condition is text_encoder's last hidden state, SDXL's (a folder with text_encoder_2/) the two encoders' penultimate
states concatenated and text_encoder_2's projected pooled output. The captions are encoded with the batch sharded
over the devices as the images are, and each record (format 'captioned', version 2) holds ALL of its image's
captions, so that training draws one per step:
  int32 label and caption count, float32 mean and std [H, W, C] (not for --prompts), float32 SDXL time_ids [6]
  (original height, width, crop top, left, --image_size twice: the crop's corner in pixels of the resized image,
  as diffusers' train_text_to_image_sdxl.py records it; of the mirror for a flipped view; a prompt gets
  (size, size, 0, 0, size, size)), token states [K, 77, D] in --text_dtype (K: the most captions of any image;
  unused rows zero), float32 pooled outputs [K, P] (SDXL).
Bytes a record: 8 + 8 H W C + 24 (SDXL) + K (77 D b + 4 P), b = 2 for float16 (the default). A caption's states are
77 x 768 x 2 = 118,272 bytes for SD 1.5 and 77 x 2048 x 2 + 1280 x 4 = 320,512 for SDXL, against 32,768 for the
moments of a 256-pixel image (4 x 32 x 32 x 4 x 2) and 524,288 at SDXL's 1024: a COCO record (5 captions) at SDXL's
size is 2.1 MB. text_conditions.npz beside the shards holds the null condition (the empty prompt's encoding for SD
1.5; zeros where model_index.json's force_zeros_for_empty_prompt says so, SDXL's default) and the --eval_prompts'
conditions, so that training needs no text encoder to start. --text_storage=ids stores each caption's token ids
instead (int32 [K, encoders, 77]: 308 bytes a caption for SD 1.5, 616 for SDXL), for data.text_encoding='on_the_fly',
which runs the encoders in the training step (docs/data.md weighs the two).
"""
import dataclasses
import os
import time
from typing import NamedTuple

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from fewstep_jax import cli, text as text_lib
from fewstep_jax.data import latents as latents_lib
from fewstep_jax.nn import sd_vae
from fewstep_jax.tools import caption_sets
from fewstep_jax.train import files
from fewstep_jax.train import sharding as sharding_lib

IMAGE_EXTENSIONS = caption_sets.IMAGE_EXTENSIONS


def center_crop_box(image: Image.Image, size: int) -> tuple:
  """ADM's center_crop_arr, and where it cut: (uint8 [size, size, 3], CropBox)."""
  original_width, original_height = image.size
  while min(image.size) >= 2 * size:
    image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
  scale = size / min(image.size)
  image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
  array = np.asarray(image.convert('RGB'))
  top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
  box = CropBox(original_height, original_width, top, left, array.shape[1], size)
  return array[top:top + size, left:left + size], box


def center_crop(image: Image.Image, size: int) -> np.ndarray:
  """ADM's center_crop_arr: uint8 [size, size, 3]."""
  return center_crop_box(image, size)[0]


class CropBox(NamedTuple):
  """What a crop did: the original image's height and width, the crop's top-left corner in pixels of the resized
  image it was cut from (resized_width wide), and its side."""
  original_height: int
  original_width: int
  top: int
  left: int
  resized_width: int
  size: int

  def time_ids(self, flipped: bool = False) -> np.ndarray:
    """SDXL's add_time_ids, float32 [6]: (original height, width, crop top, left, target height, width), as
    diffusers' StableDiffusionXLPipeline._get_add_time_ids orders them and its SDXL training script
    (train_text_to_image_sdxl.py) fills them: the crop's corner in pixels of the resized image (not of the
    original); of the mirror image for a flipped view."""
    left = self.resized_width - self.size - self.left if flipped else self.left
    return np.array([self.original_height, self.original_width, self.top, left, self.size, self.size], np.float32)


class FolderImages:
  """<folder>/<class>/<image files>: labels are the sorted class folders' indices."""

  has_images = True

  def __init__(self, folder: str):
    if not os.path.isdir(folder):
      raise FileNotFoundError(f'--folder={folder!r} is not a directory')
    self.classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    self.items = [(os.path.join(folder, name, file), label) for label, name in enumerate(self.classes)
                  for file in sorted(os.listdir(os.path.join(folder, name))) if file.endswith(IMAGE_EXTENSIONS)]
    if not self.items:
      raise FileNotFoundError(f'no images under {folder}/<class>/ (extensions {IMAGE_EXTENSIONS})')
    self.num_classes = len(self.classes)

  def __len__(self):
    return len(self.items)

  def image(self, index) -> tuple:
    path, label = self.items[index]
    with Image.open(path) as image:
      return image.convert('RGB'), label


class TfdsImages:
  """A prepared TFDS dataset's split, read by random access (tfds.data_source)."""

  has_images = True

  def __init__(self, name: str, split: str, data_dir: str):
    import tensorflow_datasets as tfds
    try:
      self.source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
    except Exception as error:  # TFDS raises several types for a dataset that is not prepared.
      raise FileNotFoundError(f'TFDS dataset {name!r} (split {split!r}) is not prepared under --data_dir='
                              f'{data_dir!r}: {error}') from None
    features = self.source.dataset_info.features
    self.num_classes = int(features['label'].num_classes) if 'label' in features else 0

  def __len__(self):
    return len(self.source)

  def image(self, index) -> tuple:
    record = self.source[index]
    return Image.fromarray(np.asarray(record['image'])), int(record.get('label', 0))


# The VAE's input from uint8 pixels, by --pixels (latents.PIXEL_RANGES): [-1, 1] as the SD VAE was trained and DiT,
# SiT and MeanFlow encode; [0, 1] as EDM2's StabilityVAEEncoder.encode_pixels feeds it (x / 255).
PIXEL_MAPS = {'signed': lambda images: images / 127.5 - 1.0, 'unit': lambda images: images / 255.0}


def encoder_fn(vae, params, mesh, pixels: str = 'signed'):
  """jit(images uint8 [B, S, S, 3]) -> (mean, std), the batch sharded over the mesh."""
  batch_sharding = sharding_lib.batch_sharding(mesh)
  to_input = PIXEL_MAPS[pixels]

  def encode(images):
    x = to_input(images.astype(jnp.float32))
    return vae.apply({'params': params}, x, method=vae.encode)

  return jax.jit(encode, in_shardings=batch_sharding, out_shardings=(batch_sharding, batch_sharding))


@dataclasses.dataclass(frozen=True)
class TextEncoding:
  """The text encoders of a diffusers pipeline folder (fewstep_jax.text.load_pipeline) and how their outputs are
  stored: token states in `dtype` (latents.TEXT_DTYPES); `eval_prompts`, encoded into text_conditions.npz."""
  encoders: tuple
  pipeline: str
  dtype: str = 'float16'
  eval_prompts: tuple = ()
  storage: str = 'states'  # latents.TEXT_STORAGES: the encoders' outputs, or token ids (data.text_encoding='on_the_fly').

  @classmethod
  def load(cls, pipeline: str, **options) -> 'TextEncoding':
    return cls(text_lib.load_pipeline(pipeline), os.path.abspath(pipeline), **options)

  @property
  def condition(self) -> str:
    return self.encoders[0].condition

  def info(self, max_captions: int, image_size: int) -> dict:
    """info.json's 'text': what the records hold and how the null condition is formed."""
    if self.dtype not in latents_lib.TEXT_DTYPES:
      raise ValueError(f'unknown --text_dtype={self.dtype!r}; known: {sorted(latents_lib.TEXT_DTYPES)}')
    if self.storage not in latents_lib.TEXT_STORAGES:
      raise ValueError(f'unknown --text_storage={self.storage!r}; known: {sorted(latents_lib.TEXT_STORAGES)}')
    states, pooled = text_lib.encode(self.encoders, [''])
    zeros = text_lib.conditions.zeros_for_empty_prompt(self.pipeline, self.condition)
    ids_shape = [len(self.encoders), states.shape[1]]
    return {'pipeline': self.pipeline, 'condition': self.condition, 'storage': self.storage, 'dtype': self.dtype,
            'tokens_shape': list(states.shape[1:]), 'ids_shape': ids_shape,
            'pooled': 0 if pooled is None else int(pooled.shape[-1]),
            'time_ids': self.condition == 'sdxl', 'max_captions': int(max_captions),
            'null': 'zeros' if zeros else 'empty_prompt', 'image_size': int(image_size)}

  def conditions(self, text_info: dict) -> dict:
    """text_conditions.npz's contents: the null condition (one row) and the evaluation prompts' (or None)."""
    null = text_lib.null_condition(self.encoders, text_info['null'] == 'zeros', text_info['image_size'])
    prompts = (text_lib.encode_prompts(self.encoders, self.eval_prompts, text_info['image_size'])
               if self.eval_prompts else None)
    texts = {'prompts': np.asarray(self.eval_prompts)} if self.eval_prompts else None
    return {'null': null, 'prompts': prompts, 'texts': texts}

  def encoder_fn(self, mesh, batch_size: int):
    """captions [n] -> (states float32 [n, L, D], pooled [n, P] or None), in batches of batch_size sharded over the
    mesh (the last padded with empty captions: one compiled shape)."""
    batch_sharding = sharding_lib.batch_sharding(mesh)

    def encode(captions):
      states, pooled = [], []
      for begin in range(0, len(captions), batch_size):
        part = list(captions[begin:begin + batch_size])
        ids = text_lib.tokenize(self.encoders, part + [''] * (batch_size - len(part)))
        s, p = text_lib.encode_ids(self.encoders, [jax.device_put(i, batch_sharding) for i in ids])
        states.append(np.asarray(s)[:len(part)])
        pooled.append(None if p is None else np.asarray(p)[:len(part)])
      return np.concatenate(states), (None if pooled[0] is None else np.concatenate(pooled))

    return encode


def _check_or_write_info(out: str, info: dict):
  info_path = os.path.join(out, 'info.json')
  if os.path.exists(info_path):
    existing = dict({'pixels': 'signed'}, **files.read_json(info_path))  # Written before --pixels: [-1, 1].
    differ = sorted(k for k in info if existing.get(k) != info[k])
    if differ:
      raise ValueError(f'{out} holds latents made with other arguments ({", ".join(f"{k}: {existing.get(k)!r}" for k in differ)}); '
                       'use another --out, or the same arguments to resume')
  elif jax.process_index() == 0:
    files.write_json(info_path, info)


def encode_dataset(images, vae, params, out: str, *, image_size: int, shard_size: int, batch_size: int,
                   flip: bool = False, source: str = '', pixels: str = 'signed', text: TextEncoding | None = None,
                   latent_channels: int = 4, log=print) -> dict:
  """Writes (or completes) the latents directory `out` for `images` (FolderImages / TfdsImages, or a caption set of
  caption_sets with `text`; a PromptList has no images, and needs no vae); returns info.
  pixels: the VAE input range (PIXEL_MAPS), recorded in info.json so that the data source checks its norm."""
  if pixels not in PIXEL_MAPS:
    raise ValueError(f'unknown --pixels={pixels!r}; known: {sorted(PIXEL_MAPS)}')
  os.makedirs(out, exist_ok=True)
  from array_record.python.array_record_module import ArrayRecordWriter
  views = 2 if flip and images.has_images else 1
  num_examples = len(images) * views
  num_shards = -(-num_examples // shard_size)
  mesh = sharding_lib.make_mesh(ml_collections.ConfigDict({'data': jax.device_count(), 'fsdp': 1}))
  batch_size = sharding_lib.device_multiple(batch_size, mesh)
  if images.has_images:
    encode = encoder_fn(vae, params, mesh, pixels)
    latent_side, latent_channels = image_size // 2 ** (len(vae.block_out_channels) - 1), vae.latent_channels
  else:
    latent_side = image_size // PROMPT_LATENT_FACTOR
  info = {'format': latents_lib.MOMENTS_FORMAT, 'shape': [latent_side, latent_side, latent_channels],
          'num_examples': num_examples, 'num_classes': images.num_classes, 'num_shards': num_shards,
          'shard_size': shard_size, 'image_size': image_size, 'flip': flip, 'source': source, 'pixels': pixels}
  if text:
    max_captions = max(len(images.captions(i)) for i in range(len(images)))
    info.update(format=latents_lib.CAPTIONED_FORMAT, version=latents_lib.CAPTIONED_VERSION,
                moments=images.has_images, text=text.info(max_captions, image_size))
    encode_text = text.encoder_fn(mesh, batch_size)
  _check_or_write_info(out, info)
  if text and jax.process_index() == 0:
    latents_lib.write_conditions(out, text.conditions(info['text']))
  dtype = latents_lib.record_dtype(info)
  paths = latents_lib.shard_paths(out, num_shards, latents_lib.SHARD_PREFIXES[info['format']])
  mine = [i for i in range(num_shards) if i % jax.process_count() == jax.process_index()]
  todo = [i for i in mine if not os.path.exists(paths[i])]
  log(f'{out}: {num_examples} {"latents" if images.has_images else "prompts"} in {num_shards} shards; '
      f'{len(mine) - len(todo)} of this process\'s {len(mine)} already written ({dtype.itemsize} bytes a record)')
  start = time.time()
  for done, shard in enumerate(todo):
    indices = range(shard * shard_size, min((shard + 1) * shard_size, num_examples))
    records = [{} for _ in indices]
    if images.has_images:
      _encode_images(images, indices, views, image_size, batch_size, encode, records, text)
    if text:
      _encode_captions(images, indices, views, encode_text, records, info['text'], text.encoders)
    temporary = paths[shard] + '.tmp'
    writer = ArrayRecordWriter(temporary, 'group_size:1')
    for record in records:
      writer.write(latents_lib.moments_record(**record) if not text else latents_lib.write_record(dtype, **record))
    writer.close()
    os.replace(temporary, paths[shard])  # Complete shards only: a killed run re-encodes the shard it was on.
    elapsed = time.time() - start
    log(f'shard {shard + 1}/{num_shards} written ({done + 1}/{len(todo)} this run, '
        f'{elapsed / (done + 1) * (len(todo) - done - 1):.0f} s left)')
  return info


# A prompt list has no VAE to say its latents' shape: SD's VAEs downsample by 8 (--image_size / 8 a side).
PROMPT_LATENT_FACTOR = 8


def _encode_images(images, indices, views, image_size, batch_size, encode, records, text):
  """Fills records' label, mean, std (and time_ids, for SDXL's text) of the images at `indices` (view index % views
  flipped)."""
  crops = []
  for record, index in zip(records, indices):
    image, record['label'] = images.image(index // views)
    crop, box = center_crop_box(image, image_size)
    flipped = bool(index % views)
    crops.append(crop[:, ::-1] if flipped else crop)
    if text and text.condition == 'sdxl':
      record['time_ids'] = box.time_ids(flipped)
  for begin in range(0, len(crops), batch_size):
    batch = np.stack(crops[begin:begin + batch_size])
    pad = batch_size - len(batch)
    mean, std = encode(np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], batch.dtype)]))
    mean, std = np.asarray(mean), np.asarray(std)
    for offset, record in enumerate(records[begin:begin + len(batch)]):
      record['mean'], record['std'] = mean[offset], std[offset]


def _encode_captions(images, indices, views, encode_text, records, text_info: dict, encoders):
  """Fills records' count and tokens (and pooled) with the text encoders' outputs for each item's captions, or with
  their token ids (int32 [K_i, encoders, 77]) where text_info['storage'] is 'ids'."""
  captions = [images.captions(index // views) for index in indices]
  flat = [caption for item in captions for caption in item]
  if text_info['storage'] == 'ids':
    outputs = {'ids': np.stack(text_lib.tokenize(encoders, flat), axis=1)}
  else:
    states, pooled = encode_text(flat)
    outputs = {'tokens': states.astype(latents_lib.text_dtype(text_info['dtype']))}
    if pooled is not None:
      outputs['pooled'] = pooled
  begin = 0
  for record, item in zip(records, captions):
    record['label'] = record.get('label', 0)
    record['count'] = len(item)
    record.update({name: value[begin:begin + len(item)] for name, value in outputs.items()})
    if text_info['time_ids'] and 'time_ids' not in record:  # A prompt: generated uncropped at the target size.
      record['time_ids'] = text_lib.conditions.time_ids(text_info['image_size'])
    begin += len(item)


FLAGS = flags.FLAGS


# The image sets (one flag each) and what opens them from the flags; exactly one is given.
SOURCES = {
    'folder': lambda f: FolderImages(f.folder),
    'tfds_name': lambda f: TfdsImages(f.tfds_name, f.split, f.data_dir),
    'captions_folder': lambda f: caption_sets.CaptionFolder(f.captions_folder),
    'jsonl': lambda f: caption_sets.CaptionJsonl(f.jsonl),
    'coco_captions': lambda f: caption_sets.CocoCaptions(f.coco_captions, f.coco_images),
    'prompts': lambda f: caption_sets.PromptList(f.prompts),
}
LABELLED_SOURCES = ('folder', 'tfds_name')


def open_source(flag_values) -> tuple:
  """(the flag that names the set, the opened set); one clear line for none, several, or a missing companion flag."""
  given = [name for name in SOURCES if flag_values[name].value]
  if len(given) != 1:
    raise ValueError(f'give exactly one of {", ".join("--" + name for name in SOURCES)} (got '
                     f'{", ".join("--" + name for name in given) or "none"})')
  name = given[0]
  captioned = name not in LABELLED_SOURCES
  if captioned != bool(flag_values.text_encoders):
    raise ValueError(f'--{name} needs --text_encoders=<a diffusers pipeline folder>' if captioned else
                     f'--text_encoders encodes captions: --{name} has class labels, not captions; give a caption set '
                     '(--captions_folder, --jsonl, --coco_captions) or --prompts')
  if name != 'prompts' and not flag_values.vae:
    raise ValueError(f'--{name} needs --vae=<the SD-VAE weights> to encode its images')
  if name != 'coco_captions' and flag_values.coco_images:
    raise ValueError('--coco_images goes with --coco_captions')
  return name, SOURCES[name](flag_values)


def main(argv):
  del argv
  name, images = open_source(FLAGS)
  vae = params = None
  if images.has_images:
    vae, params = sd_vae.load(FLAGS.vae, sd_vae.SDVAE(norm_num_groups=FLAGS.vae_groups,
                                                      **sd_vae.shape_from_file(FLAGS.vae)))
  text = None
  if FLAGS.text_encoders:
    eval_prompts = tuple(text_lib.read_prompts(FLAGS.eval_prompts)) if FLAGS.eval_prompts else ()
    text = TextEncoding.load(FLAGS.text_encoders, dtype=FLAGS.text_dtype, eval_prompts=eval_prompts,
                             storage=FLAGS.text_storage)
  source = getattr(images, 'source', '') or FLAGS.folder or f'{FLAGS.tfds_name}:{FLAGS.split}'
  encode_dataset(images, vae, params, FLAGS.out, image_size=FLAGS.image_size, shard_size=FLAGS.shard_size,
                 batch_size=FLAGS.batch_size, flip=FLAGS.flip, source=source, pixels=FLAGS.pixels, text=text,
                 latent_channels=FLAGS.latent_channels)
  norm = ' --config.data.latent_norm=edm2' if FLAGS.pixels == 'unit' else ''
  print(f'use it with --config.data.name=latents --config.data.latents_dir={FLAGS.out}{norm}')


if __name__ == '__main__':
  flags.DEFINE_string('vae', '', "the SD-VAE weights: diffusers' diffusion_pytorch_model.safetensors or .bin")
  flags.DEFINE_string('out', None, 'the latents directory to write (or to complete)')
  flags.DEFINE_string('folder', '', 'a folder of class folders of images')
  flags.DEFINE_string('tfds_name', '', 'a prepared TFDS dataset, e.g. imagenet2012')
  flags.DEFINE_string('split', 'train', 'the TFDS split')
  flags.DEFINE_string('data_dir', '', 'where the TFDS dataset is prepared')
  flags.DEFINE_integer('image_size', 256, 'the center crop side, in pixels')
  flags.DEFINE_integer('shard_size', 4096, 'images per array_record shard (the unit of resumption)')
  flags.DEFINE_integer('batch_size', 64, 'images per encoder call (rounded up to a multiple of the device count)')
  flags.DEFINE_bool('flip', False, "also store each image's horizontal mirror")
  flags.DEFINE_integer('vae_groups', 32, "the VAE's group-norm group count (32 for the SD VAE)")
  flags.DEFINE_enum('pixels', 'signed', sorted(PIXEL_MAPS),
                    "the VAE's input range: signed [-1, 1] (DiT, SiT, MeanFlow) or unit [0, 1] (EDM2's encoder, for "
                    'data.latent_norm=edm2)')
  flags.DEFINE_string('captions_folder', '', 'a folder of images, each with its captions in a .txt file beside it')
  flags.DEFINE_string('jsonl', '', 'a JSONL file of {"image": path, "caption": str} (or "captions": [...]) lines')
  flags.DEFINE_string('coco_captions', '', "COCO's captions JSON (e.g. captions_train2014.json), with --coco_images")
  flags.DEFINE_string('coco_images', '', 'the folder of the images --coco_captions names (e.g. train2014/)')
  flags.DEFINE_string('prompts', '', 'prompts only, no images: one prompt per line, or JSONL {"prompt": ...}')
  flags.DEFINE_string('text_encoders', '', "a diffusers pipeline folder whose text encoder(s) encode the captions")
  flags.DEFINE_enum('text_dtype', 'float16', sorted(latents_lib.TEXT_DTYPES), 'how token states are stored')
  flags.DEFINE_enum('text_storage', 'states', sorted(latents_lib.TEXT_STORAGES),
                    "states: the encoders' outputs; ids: token ids only, encoded in the step "
                    "(data.text_encoding='on_the_fly')")
  flags.DEFINE_string('eval_prompts', '', "prompts (a file as --prompts') encoded beside the null condition, the "
                      "run's evaluation prompts")
  flags.DEFINE_integer('latent_channels', 4, 'with --prompts: the latent channels (the shape is --image_size / 8)')
  flags.mark_flags_as_required(['out'])
  cli.run(main)
