"""The 8x8 digits with captions that say more than the label ('a thick, right-leaning seven'): the embedded
text-to-image data, its tokenizer and its frozen text encoder.

Attributes are measured from each image (`measure`, images [N, 8, 8, 1] in the model's range [-1, 1]; uint8 images
through `to_model_range` first), each turned into a word by fixed thresholds, the terciles (width: the median) of the
TRAINING split (`THRESHOLDS`; tests recompute them):
  mass    total ink, sum of (x + 1) / 2 over the 64 pixels            thin | regular | thick
  slant   the shear of the ink's second moments, -cov(col, row) / var(row): > 0 where the top of the digit lies to
          the right of its bottom                                        left-leaning | upright | right-leaning
  width   twice the ink-weighted standard deviation of the columns    narrow | wide
The height of the ink's extent is no attribute: the UCI digits were scaled to fill their box, so every one of the
1437 training digits has ink in all 8 rows. Each attribute is a smooth function of the pixels, so a generated
(continuous-valued) image is measured as a real one is: the metric re-measures the samples.

A caption (`Caption`) is a digit, a template and the words of the attributes that template names; templates name
all three attributes, a subset, or none ('a seven'). Attributes a caption does not name are not scored.

The tokenizer is CLIP's (fewstep_jax.text.CLIPTokenizer) over a vocabulary of CLIP's 512 byte symbols plus the
merges that make every caption word one token, learnt by byte-pair encoding from the caption words
(`tokenizer_files`) and shipped in digits_text_tokenizer/ (vocab.json, merges.txt, tokenizer_config.json,
special_tokens_map.json; 16 positions, padded with <|endoftext|> as SD 1.5's tokenizer is).

The text encoder is fewstep_jax.nn.clip_text's CLIPTextEncoder (CLIP-L's code) at a tiny size (`encoder_config`:
width 64, 2 layers of 4 heads, MLP 128, 16 positions, the tokenizer's 577 ids; 105,024 parameters), with random
weights from a fixed seed (clip_text.random_weights), frozen, and no file. Random is enough: what a text-to-image
model needs of a frozen encoder is a fixed map under which distinct captions give distinct states; reading the words
out of them is the denoiser's job, through its cross-attention, as it is for a pretrained CLIP. Measured over the 690
captions and the empty one (tests check the bounds): the smallest distance between two captions' token states
[16, 64] is 0.22 of the median distance (closest: 'the digit 0: thin, left-leaning and wide' and the same with 1,
one token apart). The pooled output (the state at the end-of-text token) of a random encoder is mostly the template
(half its variance) and the attribute words; the digit moves it by 1% of its variance (closest raw pair: 0.076 of
the median, 'a wide, regular, upright two' and '... eight'). A trained CLIP's text_projection makes the pooled vector
SDXL reads semantic; here its stand-in is a fixed whitening over the captions (`pooled_projection`), after which
every direction the captions span has unit variance, the digit holds 7.6% of it and the closest pair is 0.32 of
the median. The condition is SDXL's, which the 'digits' preset of nn/sd_unet.py reads: {'tokens': the last hidden
state [N, 16, 64] (cross-attention), 'pooled': the whitened pooled output [N, 64] and 'time_ids': SDXL's six size
and crop numbers [N, 6] (`TIME_IDS`: the same for every 8x8 digit), both through the time embedding's text_time
term}; the null condition is the empty caption's (`encode` gives a caption the same array whatever it is encoded
with, so the null matches bit for bit).

The pipeline (`DigitsTextData`, data.name='digits_text') gives each training image one of its captions a step, its
template drawn uniformly; the evaluation prompts (`evaluation_captions`, 60, every one naming all three attributes)
give sample i the digit i mod 10. The evaluator 'digits_text' (eval/evaluate.py, eval/digits_eval.py) adds to the
digits' Frechet distance caption_accuracy (the classifier reads the caption's digit) and attribute_agreement (a
named attribute measures as the caption's word). On the test images under their own captions they are 0.994 (the
classifier's accuracy) and 1 (the words were measured there): the references. Captions that ignore the image score
lower: shuffled among the test images 0.10 and 0.41; of another test image of the same digit (the digit right, the
attributes by chance) 0.994 and 0.48.
"""
import collections
import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from fewstep_jax.conditions import Conditioning
from fewstep_jax.data.digits_arrays import load_digits_arrays, to_model_range
from fewstep_jax.data.pipeline import HostBatches, PermutationBatches
from fewstep_jax.errors import ConfigError
from fewstep_jax.nn import clip_text
from fewstep_jax.text import tokenizer as tokenizer_lib

TOKENIZER_DIR = os.path.join(os.path.dirname(__file__), 'digits_text_tokenizer')
CONTEXT_LENGTH = 16
START, END = tokenizer_lib.LITERALS
ENCODER_SEED = 0

DIGIT_WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
# Each attribute's words, lowest measure first; len(words) - 1 thresholds split the measure.
ATTRIBUTES = {
    'mass': ('thin', 'regular', 'thick'),
    'slant': ('left-leaning', 'upright', 'right-leaning'),
    'width': ('narrow', 'wide'),
}
# The terciles (width: the median) of the training split's measures; test_digits_text recomputes them.
THRESHOLDS = {
    'mass': (17.0522878, 19.2687005),
    'slant': (-0.0889795, 0.0104056),
    'width': (2.44582657,),
}

# (template, the attributes it names). '{a}' is 'a' or 'an' by the next word, '{digit}' the digit's word,
# '{numeral}' its figure.
TEMPLATES = (
    ('{a} {digit}', ()),
    ('{a} {mass} {digit}', ('mass',)),
    ('{a} {slant} {digit}', ('slant',)),
    ('{a} {width} {digit}', ('width',)),
    ('{a} {mass}, {slant} {digit}', ('mass', 'slant')),
    ('{digit}, {mass} and {slant}', ('mass', 'slant')),
    ('the digit {numeral}, {width} and {mass}', ('width', 'mass')),
    ('{a} {width}, {mass}, {slant} {digit}', ('width', 'mass', 'slant')),
    ('the digit {numeral}: {mass}, {slant} and {width}', ('mass', 'slant', 'width')),
)
FULL_TEMPLATES = tuple(i for i, (_, named) in enumerate(TEMPLATES) if len(named) == len(ATTRIBUTES))
NUM_EVALUATION_PROMPTS = 60  # 6 per digit; sample i has prompt i mod 60, whose digit is i mod 10.
VOWELS = 'aeiou'
# Ink below a tenth of full intensity is background: a generator's background is seldom exactly -1, and faint haze
# over the 30-odd background pixels would otherwise move the mass and width words (under Gaussian noise of standard
# deviation 0.1 on the test images, the floor keeps 93% / 96% / 97% of the mass / slant / width words instead of
# 83% / 93% / 74%). The faintest stroke pixels of the data (1/16) fall below it too.
INK_FLOOR = 0.1


def measure(images) -> dict:
  """{'mass', 'slant', 'width'}: float64 [N] of images [N, 8, 8, 1] in [-1, 1] (clipped there, as written images
  are), read as ink max(0, ((x + 1) / 2 - INK_FLOOR) / (1 - INK_FLOOR)). A blank image measures 0 everywhere."""
  images = np.asarray(images, np.float64)
  if images.ndim != 4 or images.shape[1:] != (8, 8, 1):
    raise ValueError(f'digits images must be [N, 8, 8, 1], got {images.shape}')
  ink = np.clip(((images[..., 0] + 1.0) / 2.0 - INK_FLOOR) / (1.0 - INK_FLOOR), 0.0, 1.0)
  mass = ink.sum((1, 2))
  weights = ink / np.maximum(mass, 1e-12)[:, None, None]
  rows, cols = np.arange(8.0)[:, None], np.arange(8.0)[None, :]
  moment = lambda f: (weights * f).sum((1, 2))
  row_offset = rows - moment(rows)[:, None, None]
  col_offset = cols - moment(cols)[:, None, None]
  row_variance = moment(row_offset ** 2)
  slant = -moment(row_offset * col_offset) / np.maximum(row_variance, 1e-12)
  return {'mass': mass, 'slant': slant, 'width': 2.0 * np.sqrt(moment(col_offset ** 2))}


def attribute_levels(images) -> dict:
  """{attribute: int [N]}: the index into ATTRIBUTES[attribute] of each image's word."""
  return {name: np.searchsorted(np.asarray(THRESHOLDS[name]), values, side='right')
          for name, values in measure(images).items()}


@dataclasses.dataclass(frozen=True)
class Caption:
  """A digit 0..9, a TEMPLATES index and the level (index into ATTRIBUTES[name]) of each attribute it names."""
  digit: int
  template: int
  levels: tuple  # ((attribute, level), ...) of the attributes the template names, in ATTRIBUTES' order.

  @classmethod
  def of(cls, digit: int, template: int, levels: dict) -> 'Caption':
    named = TEMPLATES[template][1]
    return cls(int(digit), int(template), tuple((name, int(levels[name])) for name in ATTRIBUTES if name in named))

  @property
  def text(self) -> str:
    words = {name: ATTRIBUTES[name][level] for name, level in self.levels}
    text = TEMPLATES[self.template][0].format(a='{a}', digit=DIGIT_WORDS[self.digit], numeral=self.digit, **words)
    return _articles(text)


def _articles(text: str) -> str:
  """'{a}' -> 'an' before a vowel, else 'a'."""
  words = text.split(' ')
  return ' '.join(('an' if words[i + 1][0] in VOWELS else 'a') if word == '{a}' else word
                  for i, word in enumerate(words))


def all_levels() -> list:
  """Every combination of attribute levels, {attribute: level}, in a fixed order."""
  combos = [{}]
  for name, words in ATTRIBUTES.items():
    combos = [dict(combo, **{name: level}) for combo in combos for level in range(len(words))]
  return combos


def all_captions() -> list:
  """Every distinct caption: each digit, template and combination of the levels the template names."""
  seen = {}
  for digit in range(len(DIGIT_WORDS)):
    for template in range(len(TEMPLATES)):
      for levels in all_levels():
        caption = Caption.of(digit, template, levels)
        seen.setdefault(caption, None)
  return list(seen)


@functools.cache
def evaluation_captions() -> tuple:
  """NUM_EVALUATION_PROMPTS captions naming every attribute: prompt i has digit i mod 10 and, j = i // 10, the
  j-th most frequent combination of levels among that digit's training images (ties in all_levels' order), in the
  full templates alternately. So every prompt describes digits the training split holds."""
  images, labels = split_arrays('train')
  levels = attribute_levels(images)
  combos = all_levels()
  index = lambda i: combos.index({name: int(levels[name][i]) for name in ATTRIBUTES})
  counts = collections.Counter((int(labels[i]), index(i)) for i in range(len(labels)))
  per_digit = NUM_EVALUATION_PROMPTS // len(DIGIT_WORDS)
  ranked = {digit: sorted(range(len(combos)), key=lambda c: (-counts[(digit, c)], c))[:per_digit]
            for digit in range(len(DIGIT_WORDS))}
  return tuple(Caption.of(i % 10, FULL_TEMPLATES[(i // 10) % len(FULL_TEMPLATES)], combos[ranked[i % 10][i // 10]])
               for i in range(NUM_EVALUATION_PROMPTS))


def image_captions(labels, levels: dict, templates) -> list:
  """The caption of image k: labels [N] its digit, levels {attribute: [N]} its measured levels, templates [N]."""
  return [Caption.of(labels[k], templates[k], {name: values[k] for name, values in levels.items()})
          for k in range(len(labels))]


@functools.cache
def split_arrays(split: str):
  """(images float32 [N, 8, 8, 1] in [-1, 1], labels int32 [N]) of the digits' 'train' or 'test' split (shared:
  not to be written to)."""
  images, labels = load_digits_arrays(split)
  return to_model_range(images), labels


# --- tokenizer ---------------------------------------------------------------------------------------------------


def caption_words() -> list:
  """The words of every caption as CLIP's tokenizer splits them, sorted."""
  words = set()
  for caption in all_captions():
    words.update(tokenizer_lib.split_words(tokenizer_lib.normalize(caption.text)))
  return sorted(words)


def learn_merges(words) -> list:
  """Byte-pair encoding learnt on `words` (each counted once) until each is one symbol: repeatedly the most frequent
  adjacent pair (ties: the smallest pair) is merged. Symbols are CLIP's byte characters, a word's last with '</w>'."""
  characters = tokenizer_lib.byte_characters()
  split = []
  for word in words:
    symbols = [characters[b] for b in word.encode('utf-8')]
    symbols[-1] += tokenizer_lib.END_OF_WORD
    split.append(symbols)
  merges = []
  while True:
    pairs = collections.Counter(pair for symbols in split for pair in zip(symbols, symbols[1:]))
    if not pairs:
      return merges
    best = min(pairs, key=lambda pair: (-pairs[pair], pair))
    merges.append(best)
    split = [_merge(symbols, best) for symbols in split]


def _merge(symbols: list, pair: tuple) -> list:
  merged, i = [], 0
  while i < len(symbols):
    if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
      merged.append(symbols[i] + symbols[i + 1])
      i += 2
    else:
      merged.append(symbols[i])
      i += 1
  return merged


def tokenizer_files() -> dict:
  """{file name: contents} of the tokenizer folder, as CLIP's are laid out: vocab.json holds the 256 byte characters,
  the same with '</w>', each merge's result in merge order, then the start and end tokens (the end token the
  largest id, as in CLIP)."""
  characters = tokenizer_lib.byte_characters()
  merges = learn_merges(caption_words())
  tokens = list(characters) + [c + tokenizer_lib.END_OF_WORD for c in characters] + [a + b for a, b in merges]
  tokens += [START, END]
  vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
  special = {'bos_token': START, 'eos_token': END, 'unk_token': END, 'pad_token': END}
  dump = lambda value: json.dumps(value, ensure_ascii=False, indent=1, sort_keys=False) + '\n'
  return {
      'vocab.json': dump(vocab),
      'merges.txt': '#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in merges),
      'tokenizer_config.json': dump(dict(special, model_max_length=CONTEXT_LENGTH)),
      'special_tokens_map.json': dump(special),
  }


def write_tokenizer(folder: str = TOKENIZER_DIR):
  """Writes `tokenizer_files` into `folder` (how the shipped folder was made)."""
  os.makedirs(folder, exist_ok=True)
  for name, contents in tokenizer_files().items():
    with open(os.path.join(folder, name), 'w', encoding='utf-8') as file:
      file.write(contents)


@functools.cache
def tokenizer() -> tokenizer_lib.CLIPTokenizer:
  return tokenizer_lib.CLIPTokenizer.from_folder(TOKENIZER_DIR)


# --- text encoder ------------------------------------------------------------------------------------------------


@functools.cache
def encoder_config() -> clip_text.CLIPTextConfig:
  """CLIP's text transformer at a tiny size; the vocabulary and end token are the tokenizer's."""
  vocab = tokenizer().vocab
  return clip_text.CLIPTextConfig(vocab_size=max(vocab.values()) + 1, hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=CONTEXT_LENGTH,
                                  eos_token_id=vocab[END])


@functools.cache
def _encoder():
  """input_ids int [ENCODE_CHUNK, 16] -> {'tokens', 'pooled'} of the frozen encoder, unprojected."""
  config = encoder_config()
  weights = clip_text.random_weights(config, ENCODER_SEED)
  params = jax.tree.map(jnp.asarray, clip_text.from_state_dict(weights, config, source='random weights'))
  module = clip_text.CLIPTextEncoder(config)

  @jax.jit
  def apply(params, input_ids):
    out = module.apply({'params': params}, input_ids)
    return {'tokens': out.last_hidden_state, 'pooled': out.pooled}

  return functools.partial(apply, params)


ENCODE_CHUNK = 64
# SDXL's size conditions of every image: original size (8, 8), crop top-left (0, 0), target size (8, 8); the
# digits are neither resized nor cropped, so the ids are the same for all.
TIME_IDS = (8, 8, 0, 0, 8, 8)
# The projection's floor on the pooled covariance's eigenvalues, relative to their mean: the direction that the
# encoder's final layer norm nearly removes (its output sums to about a constant) is not amplified.
WHITENING_FLOOR = 1e-3


def _encode_ids(ids, project) -> dict:
  """{'tokens', 'pooled'} numpy of int ids [N, 16], ENCODE_CHUNK rows at a time through one compiled function (the
  last chunk padded with the empty caption), `project` (jitted) applied to each chunk's pooled rows."""
  padded = -len(ids) % ENCODE_CHUNK
  ids = np.concatenate([ids, np.repeat(tokenizer()([''])[:1], padded, axis=0)])
  chunks = []
  for start in range(0, len(ids), ENCODE_CHUNK):
    chunk = _encoder()(jnp.asarray(ids[start:start + ENCODE_CHUNK]))
    chunks.append(dict(chunk, pooled=project(chunk['pooled'])))
  return {name: np.concatenate([np.asarray(chunk[name]) for chunk in chunks])[:len(ids) - padded]
          for name in chunks[0]}


@functools.cache
def pooled_projection():
  """(mean float32 [64], matrix float32 [64, 64]): the whitening (ZCA) of the encoder's pooled output over every
  caption and the empty one. The random encoder's pooled vector is mostly the template (about half its variance)
  and the attribute words; the digit word moves it in directions of about 1% of the variance, which a network reading
  it learns slowly (the time goes as the inverse of a direction's variance). Whitened, every direction the captions
  span has unit variance, as a trained CLIP's text_projection makes the pooled vector that SDXL reads semantic: the
  whole information, on an equal footing."""
  raw = _encode_ids(tokenizer()([caption.text for caption in all_captions()] + ['']), lambda pooled: pooled)
  pooled = raw['pooled'].astype(np.float64)
  mean = pooled.mean(0)
  values, vectors = np.linalg.eigh(np.cov(pooled - mean, rowvar=False))
  values = np.maximum(values, WHITENING_FLOOR * values.mean())
  return mean.astype(np.float32), ((vectors / np.sqrt(values)) @ vectors.T).astype(np.float32)


@jax.jit
def _whiten(pooled, mean, matrix):
  return (pooled - mean) @ matrix


def encode(captions) -> dict:
  """{'tokens': float32 [N, 16, 64] (the last hidden state), 'pooled': float32 [N, 64] (the state at the
  end-of-text token, whitened by `pooled_projection`), 'time_ids': float32 [N, 6] (TIME_IDS)} of N caption strings,
  as numpy. Encoded ENCODE_CHUNK at a time (the last chunk padded), so that a caption's encoding is the same array
  whatever else is encoded with it: the null condition (the empty caption's, encoded alone) is then exactly the rows
  that training batches or prompts hold for it."""
  mean, matrix = pooled_projection()
  encoded = _encode_ids(tokenizer()(list(captions)), lambda pooled: _whiten(pooled, mean, matrix))
  return dict(encoded, time_ids=np.tile(np.asarray(TIME_IDS, np.float32), (len(encoded['pooled']), 1)))


# --- the data pipeline -------------------------------------------------------------------------------------------


class _CaptionedImages:
  """The training split in memory for PermutationBatches: read_batch(indices) -> {'x': float32 [b, 8, 8, 1] in
  [-1, 1], 'caption_rows': int [b, len(TEMPLATES)], each image's caption under every template as a row of the
  caption table}."""

  def __init__(self, images, caption_rows):
    self._images, self._caption_rows = images, caption_rows

  def __len__(self):
    return len(self._images)

  def read_batch(self, indices) -> dict:
    return {'x': self._images[indices], 'caption_rows': self._caption_rows[indices]}


class CaptionTable:
  """Every caption (all_captions) encoded once: `rows` {Caption: row}, `encodings` {'tokens': [C, 16, 64],
  'pooled': [C, 64], 'time_ids': [C, 6]}; `of(labels, levels)` gives int [N, len(TEMPLATES)], image k's caption
  row under each template."""

  def __init__(self):
    captions = all_captions()
    self.rows = {caption: row for row, caption in enumerate(captions)}
    self.encodings = encode([caption.text for caption in captions])

  def of(self, labels, levels: dict) -> np.ndarray:
    return np.array([[self.rows[caption] for caption in image_captions(labels, levels, [t] * len(labels))]
                     for t in range(len(TEMPLATES))], np.int64).T

  def conditions(self, rows) -> dict:
    """The text condition {'tokens': [b, 16, 64], 'pooled': [b, 64], 'time_ids': [b, 6]} of caption rows [b]."""
    return {name: value[rows] for name, value in self.encodings.items()}


class DigitsTextData(HostBatches):
  """DataPipeline 'digits_text' (kind 'host'): the digits' training split, each image with one of its captions per
  step, chosen among len(TEMPLATES) templates by a generator seeded by (seed, process, batch count), so that a
  resumed run draws the same captions. Batches {'x': float32 [b, 8, 8, 1], 'y': {'tokens': float32 [b, 16, 64],
  'pooled': float32 [b, 64], 'time_ids': float32 [b, 6]}}. The 1437 images are held in memory whatever data.reader says."""

  data_shape = (8, 8, 1)
  num_classes = 0  # The digits' labels are not the condition: the captions are.
  evaluator = 'digits_text'

  def __init__(self, config_data, *, global_batch_size: int, seed: int):
    if config_data.get('image_size', 0):
      raise ConfigError(f"data.image_size={config_data.image_size}: the digits_text images are 8x8 and are not "
                        "resized; unset data.image_size")
    images, labels = split_arrays('train')
    self.table = CaptionTable()
    self._seed, self._process = int(seed), jax.process_index()
    self._drawn = 0
    source = _CaptionedImages(images, self.table.of(labels, attribute_levels(images)))
    self._batches = PermutationBatches(source, global_batch_size=global_batch_size, seed=seed,
                                       process_index=self._process, process_count=jax.process_count(),
                                       prefetch=config_data.get('prefetch', 2))

  @functools.cached_property
  def conditioning(self) -> Conditioning:
    """Text conditions; the null is the empty caption's encoding, the prompts evaluation_captions'."""
    null = jax.tree.map(lambda leaf: leaf[0], encode(['']))
    return Conditioning('text', null_text=null, prompts=encode([caption.text for caption in evaluation_captions()]))

  def prompt_texts(self) -> list:
    return [caption.text for caption in evaluation_captions()]

  def next_batch(self) -> dict:
    batch = next(self._batches)
    rows = batch['caption_rows']
    templates = np.random.default_rng([self._seed, self._process, self._drawn]).integers(len(TEMPLATES),
                                                                                          size=len(rows))
    self._drawn += 1
    return {'x': batch['x'], 'y': self.table.conditions(rows[np.arange(len(rows)), templates])}

  def get_state(self) -> dict:
    return dict(self._batches.get_state(), captions_drawn=self._drawn)

  def set_state(self, state: dict) -> None:
    if 'captions_drawn' not in state:
      raise ConfigError('this checkpoint\'s data state was not written by the digits_text pipeline (no '
                        'captions_drawn): resume it with the data config it was trained with')
    state = dict(state)
    self._drawn = int(state.pop('captions_drawn'))
    self._batches.set_state(state)

  def reference_samples(self, n: int, split: str, seed: int) -> dict:
    """The first min(n, len(split)) images of a `seed`-permutation of `split`, {'x': [n, 8, 8, 1], 'y': the text
    condition of each one's caption in the first full template}."""
    images, labels = split_arrays(split)
    order = np.random.default_rng(seed).permutation(len(images))[:n]
    images, labels = images[order], labels[order]
    captions = own_captions(images, labels)
    return {'x': images, 'y': self.table.conditions(np.array([self.table.rows[c] for c in captions], np.int64))}


# --- scores ------------------------------------------------------------------------------------------------------


def attribute_agreement(images, captions) -> float:
  """The share of the attributes the captions name (over all images: images [N, 8, 8, 1] in [-1, 1], captions N
  Captions) whose measured level on the image is the caption's; nan where no caption names one."""
  levels = attribute_levels(images)
  hits = [int(levels[name][k]) == level for k, caption in enumerate(captions) for name, level in caption.levels]
  return float(np.mean(hits)) if hits else float('nan')


def own_captions(images, labels, template: int = FULL_TEMPLATES[0]) -> list:
  """Each image's caption under `template`: its label and its measured attribute levels."""
  return image_captions(labels, attribute_levels(images), [template] * len(labels))
