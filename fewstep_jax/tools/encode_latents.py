"""Encodes an image dataset with the SD-VAE into a latents directory of posterior moments (data.name='latents').

  python -m fewstep_jax.tools.encode_latents --vae=diffusion_pytorch_model.safetensors --out=latents/imagenet256 \
      --tfds_name=imagenet2012 --data_dir=/path/to/tensorflow_datasets --split=train
  python -m fewstep_jax.tools.encode_latents --vae=... --out=... --folder=/path/to/images    # <folder>/<class>/<image>

Each image is center-cropped to --image_size as DiT's, SiT's and MeanFlow's preprocessing does (ADM's
`center_crop_arr`: halve with a box filter while the short side is at least twice the size, resize bicubically so
that it equals the size, crop the center), scaled to [-1, 1] and encoded; the posterior's mean and std (unscaled)
and the label are stored one record per image in array_record shards of --shard_size images (layout:
`fewstep_jax/data/latents.py`). The batch is sharded over every device; with several processes
(jax.distributed) each encodes the shards whose index is its process index modulo the process count. A shard is
written to a temporary file and renamed when complete, so an interrupted run, started again with the same
arguments, encodes only the shards that are missing. --flip also stores each image's horizontal mirror (a
fixed flip augmentation; the record count doubles). --pixels=unit feeds the VAE images in [0, 1] as EDM2's
StabilityVAEEncoder does (its ImageNet-512 networks read such latents, with --config.data.latent_norm=edm2); the
default, signed, is [-1, 1].
"""
import os
import time

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from fewstep_jax import cli
from fewstep_jax.data import latents as latents_lib
from fewstep_jax.nn import sd_vae
from fewstep_jax.train import files
from fewstep_jax.train import sharding as sharding_lib

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.JPEG')


def center_crop(image: Image.Image, size: int) -> np.ndarray:
  """ADM's center_crop_arr: uint8 [size, size, 3]."""
  while min(image.size) >= 2 * size:
    image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
  scale = size / min(image.size)
  image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
  array = np.asarray(image.convert('RGB'))
  top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
  return array[top:top + size, left:left + size]


class FolderImages:
  """<folder>/<class>/<image files>: labels are the sorted class folders' indices."""

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


def encode_dataset(images, vae, params, out: str, *, image_size: int, shard_size: int, batch_size: int,
                   flip: bool = False, source: str = '', pixels: str = 'signed', log=print) -> dict:
  """Writes (or completes) the latents directory `out` for `images` (FolderImages / TfdsImages); returns info.
  pixels: the VAE input range (PIXEL_MAPS), recorded in info.json so that the data source checks its norm."""
  if pixels not in PIXEL_MAPS:
    raise ValueError(f'unknown --pixels={pixels!r}; known: {sorted(PIXEL_MAPS)}')
  os.makedirs(out, exist_ok=True)
  from array_record.python.array_record_module import ArrayRecordWriter
  views = 2 if flip else 1
  num_examples = len(images) * views
  num_shards = -(-num_examples // shard_size)
  mesh = sharding_lib.make_mesh(ml_collections.ConfigDict({'data': jax.device_count(), 'fsdp': 1}))
  batch_size = sharding_lib.device_multiple(batch_size, mesh)
  encode = encoder_fn(vae, params, mesh, pixels)
  latent_side = image_size // 2 ** (len(vae.block_out_channels) - 1)
  info = {'format': latents_lib.MOMENTS_FORMAT, 'shape': [latent_side, latent_side, vae.latent_channels],
          'num_examples': num_examples, 'num_classes': images.num_classes, 'num_shards': num_shards,
          'shard_size': shard_size, 'image_size': image_size, 'flip': flip, 'source': source, 'pixels': pixels}
  info_path = os.path.join(out, 'info.json')
  if os.path.exists(info_path):
    existing = dict({'pixels': 'signed'}, **files.read_json(info_path))  # Written before --pixels: [-1, 1].
    differ = sorted(k for k in info if existing.get(k) != info[k])
    if differ:
      raise ValueError(f'{out} holds latents made with other arguments ({", ".join(f"{k}: {existing.get(k)!r}" for k in differ)}); '
                       'use another --out, or the same arguments to resume')
  elif jax.process_index() == 0:
    files.write_json(info_path, info)
  paths = latents_lib.shard_paths(out, num_shards)
  mine = [i for i in range(num_shards) if i % jax.process_count() == jax.process_index()]
  todo = [i for i in mine if not os.path.exists(paths[i])]
  log(f'{out}: {num_examples} latents in {num_shards} shards; {len(mine) - len(todo)} of this process\'s '
      f'{len(mine)} already written')
  start = time.time()
  for done, shard in enumerate(todo):
    indices = range(shard * shard_size, min((shard + 1) * shard_size, num_examples))
    crops, labels = [], []
    for index in indices:
      image, label = images.image(index // views)
      crop = center_crop(image, image_size)
      crops.append(crop[:, ::-1] if index % views else crop)
      labels.append(label)
    means, stds = [], []
    for begin in range(0, len(crops), batch_size):
      batch = np.stack(crops[begin:begin + batch_size])
      pad = batch_size - len(batch)
      mean, std = encode(np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], batch.dtype)]))
      means.append(np.asarray(mean)[:len(batch)])
      stds.append(np.asarray(std)[:len(batch)])
    means, stds = np.concatenate(means), np.concatenate(stds)
    temporary = paths[shard] + '.tmp'
    writer = ArrayRecordWriter(temporary, 'group_size:1')
    for mean, std, label in zip(means, stds, labels):
      writer.write(latents_lib.moments_record(mean, std, label))
    writer.close()
    os.replace(temporary, paths[shard])  # Complete shards only: a killed run re-encodes the shard it was on.
    elapsed = time.time() - start
    log(f'shard {shard + 1}/{num_shards} written ({done + 1}/{len(todo)} this run, '
        f'{elapsed / (done + 1) * (len(todo) - done - 1):.0f} s left)')
  return info


FLAGS = flags.FLAGS


def main(argv):
  del argv
  if bool(FLAGS.folder) == bool(FLAGS.tfds_name):
    raise ValueError('give exactly one of --folder and --tfds_name')
  images = FolderImages(FLAGS.folder) if FLAGS.folder else TfdsImages(FLAGS.tfds_name, FLAGS.split, FLAGS.data_dir)
  vae, params = sd_vae.load(FLAGS.vae, sd_vae.SDVAE(norm_num_groups=FLAGS.vae_groups,
                                                    **sd_vae.shape_from_file(FLAGS.vae)))
  source = FLAGS.folder or f'{FLAGS.tfds_name}:{FLAGS.split}'
  encode_dataset(images, vae, params, FLAGS.out, image_size=FLAGS.image_size, shard_size=FLAGS.shard_size,
                 batch_size=FLAGS.batch_size, flip=FLAGS.flip, source=source, pixels=FLAGS.pixels)
  norm = ' --config.data.latent_norm=edm2' if FLAGS.pixels == 'unit' else ''
  print(f'use it with --config.data.name=latents --config.data.latents_dir={FLAGS.out}{norm}')


if __name__ == '__main__':
  flags.DEFINE_string('vae', None, "the SD-VAE weights: diffusers' diffusion_pytorch_model.safetensors or .bin")
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
  flags.mark_flags_as_required(['vae', 'out'])
  cli.run(main)
