"""The image-caption sets and prompt lists `encode_latents` reads (fewstep_jax/tools/encode_latents.py). Each is a list
of items with `captions(index) -> [str, ...]` (one or more per item), `image(index) -> (PIL image, label)` where it
has images (`has_images`), `num_classes` (0: captions, not labels, condition these sets) and `source` (what info.json
records). Every check runs when the set is opened, before anything is encoded, and a problem is refused in one line
naming the first offender and the count: a set with holes is more often a mistake (a failed download, a wrong
extension) than an intent, and skipping silently would change the data without a word.

  CaptionFolder(dir)        dir/**/img.png with dir/**/img.txt beside it, one caption per non-empty line. Chosen by
                            its own flag (--captions_folder), not detected in --folder, whose class folders would
                            read a stray .txt file as a different dataset.
  CaptionJsonl(file)        lines {"image": path, "caption": str} or {"image": path, "captions": [str, ...]}; paths
                            relative to the file's folder; lines naming the same image add to its captions.
  CocoCaptions(json, dir)   COCO's captions_<split>2014.json ('images': id, file_name; 'annotations': image_id,
                            caption) with its images folder; about 5 captions per image, in annotation order.
  PromptList(file)          prompts only (text_lib.read_prompts: one per non-empty line, or JSONL), no images.
"""
import collections
import json
import os

from PIL import Image

from fewstep_jax import text as text_lib
from fewstep_jax.errors import ConfigError, InputNotFoundError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.JPEG')


def _refuse_if_any(problems: list, what: str, fix: str):
  if problems:
    raise ConfigError(f'{len(problems)} {what} (first: {problems[0]}); {fix}')


def _clean(captions) -> list:
  return [caption.strip() for caption in captions if caption.strip()]


class _Captioned:
  """items: [(image path, [captions])]."""

  has_images = True
  num_classes = 0

  def __len__(self):
    return len(self.items)

  def captions(self, index) -> list:
    return self.items[index][1]

  def image(self, index) -> tuple:
    with Image.open(self.items[index][0]) as image:
      return image.convert('RGB'), 0


class CaptionFolder(_Captioned):
  """A folder (searched recursively) of images, each with its captions in a .txt file of the same stem."""

  def __init__(self, folder: str):
    if not os.path.isdir(folder):
      raise InputNotFoundError(f'--captions_folder={folder!r} is not a directory')
    images, texts = {}, {}
    for root, _, names in os.walk(folder):
      for name in names:
        stem, extension = os.path.splitext(os.path.join(root, name))
        if name.endswith(IMAGE_EXTENSIONS):
          images[stem] = stem + extension
        elif extension == '.txt':
          texts[stem] = stem + extension
    _refuse_if_any(sorted(texts[stem] for stem in texts if stem not in images), f'caption files under {folder} have '
                   'no image of the same name', 'remove them or add their images')
    self.items = []
    uncaptioned = []
    for stem in sorted(images):
      captions = []
      if stem in texts:
        with open(texts[stem], encoding='utf-8') as file:
          captions = _clean(file)
      if captions:
        self.items.append((images[stem], captions))
      else:
        uncaptioned.append(os.path.relpath(images[stem], folder))
    _refuse_if_any(uncaptioned, f'images under {folder} have no caption (a .txt file of the same name with a non-empty '
                   'line)', 'caption them or remove them')
    if not self.items:
      raise InputNotFoundError(f'no images under {folder} (extensions {IMAGE_EXTENSIONS})')
    self.source = os.path.abspath(folder)


class CaptionJsonl(_Captioned):
  """A JSONL file of {"image": path, "caption": str | "captions": [str, ...]} lines."""

  def __init__(self, path: str):
    if not os.path.isfile(path):
      raise InputNotFoundError(f'--jsonl={path!r} is not a file')
    base = os.path.dirname(os.path.abspath(path))
    captions = collections.OrderedDict()
    with open(path, encoding='utf-8') as file:
      for number, line in enumerate(file, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError as error:
          raise ConfigError(f'{path}, line {number}: not JSON ({error.msg})') from None
        texts = record.get('captions', [record['caption']] if 'caption' in record else None) if isinstance(
            record, dict) else None
        if not isinstance(texts, list) or not isinstance(record.get('image'), str):
          raise ConfigError(f'{path}, line {number}: expected {{"image": path, "caption": str}} or {{"image": path, '
                            '"captions": [str, ...]}')
        texts = _clean(str(text) for text in texts)
        if not texts:
          raise ConfigError(f'{path}, line {number}: {record["image"]} has no non-empty caption')
        captions.setdefault(os.path.join(base, record['image']), []).extend(texts)
    _refuse_if_any([image for image in captions if not os.path.isfile(image)], f'images named in {path} are missing',
                   'fix the paths (relative ones are read against the JSONL\'s folder) or remove their lines')
    if not captions:
      raise ConfigError(f'{path} names no images')
    self.items = list(captions.items())
    self.source = os.path.abspath(path)


class CocoCaptions(_Captioned):
  """COCO's captions JSON and its images folder."""

  def __init__(self, path: str, images_folder: str):
    if not os.path.isfile(path):
      raise InputNotFoundError(f'--coco_captions={path!r} is not a file')
    if not os.path.isdir(images_folder or ''):
      raise InputNotFoundError(f'--coco_images={images_folder!r} is not a directory: give the folder of the images '
                               f'{os.path.basename(path)} names (e.g. train2014/)')
    with open(path, encoding='utf-8') as file:
      try:
        coco = json.load(file)
      except json.JSONDecodeError as error:
        raise ConfigError(f'{path}: not JSON ({error.msg})') from None
    if not isinstance(coco, dict) or 'images' not in coco or 'annotations' not in coco:
      raise ConfigError(f'{path} is not a COCO captions file: it needs "images" and "annotations"')
    files = {image['id']: image['file_name'] for image in coco['images']}
    captions = collections.defaultdict(list)
    unknown = []
    for annotation in coco['annotations']:
      if annotation['image_id'] not in files:
        unknown.append(annotation['image_id'])
      captions[annotation['image_id']].extend(_clean([annotation['caption']]))
    _refuse_if_any(unknown, f'annotations of {path} name unknown image ids', 'use the images list of the same file')
    _refuse_if_any([files[i] for i in sorted(files) if not captions[i]], f'images of {path} have no caption',
                   'remove them from "images"')
    _refuse_if_any([files[i] for i in sorted(files) if not os.path.isfile(os.path.join(images_folder, files[i]))],
                   f'images of {path} are not in {images_folder}', 'give the folder that holds them as --coco_images')
    self.items = [(os.path.join(images_folder, files[i]), captions[i]) for i in sorted(files)]
    self.source = os.path.abspath(path)


class PromptList:
  """Prompts without images: one item per prompt."""

  has_images = False
  num_classes = 0

  def __init__(self, path: str):
    self._prompts = text_lib.read_prompts(path)
    self.source = os.path.abspath(path)

  def __len__(self):
    return len(self._prompts)

  def captions(self, index) -> list:
    return [self._prompts[index]]
