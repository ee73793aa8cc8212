"""CLIP's byte-level BPE tokenizer, read from a diffusers pipeline's `tokenizer/` or `tokenizer_2/` folder (vocab.json,
merges.txt, tokenizer_config.json, special_tokens_map.json), with the Python standard library alone; nothing is
downloaded.

  tokenizer = CLIPTokenizer.from_folder('sdxl/tokenizer_2')
  ids = tokenizer(['a photo of a cat', ''])      # int32 [2, 77]: <|startoftext|>, the caption, <|endoftext|>, padding

It computes what transformers' CLIPTokenizer (the `tokenizers`-backed one of transformers 5, which the pipelines'
`tokenizer(prompt, padding='max_length', max_length=77, truncation=True)` calls) computes; checked id for id on
awkward captions by experiments/parity/clip_text.py. Its own reader rather than the `tokenizers` package: that package
is a compiled wheel that pulls in huggingface_hub (and its HTTP stack) for a few dozen lines of rules, which are:

  1. The special tokens (start, end, unknown and padding: the folder's) written in a caption are their ids (so SDXL's
     tokenizer_2 reads every '!' as its padding id 0, as transformers does): as written, or also after normalisation
     (so '<|ENDOFTEXT|>' too) where the folder marks the token "normalized": true everywhere it names it
     (added_tokens_decoder first; a plain string is not normalised). That is transformers 5's answer for the forms
     SD 1.5's and SDXL's files use; for one token marked both ways, its answer depends on the order it adds them in,
     which is not followed here.
  2. The rest is normalised: Unicode NFC, every run of white space (Unicode's White_Space) one ' ', each character
     lower-cased on its own (so a final capital sigma is 'σ', as transformers' Rust lower-casing gives).
  3. Split into words: a contraction ('s 't 're 've 'm 'll 'd), a run of letters (Unicode L*), a single number
     character (N*), or a run of other non-space characters; spaces go.
  4. Each word's UTF-8 bytes become GPT-2's printable byte characters; the last carries CLIP's '</w>'; BPE merges
     them in merges.txt's order of priority; a symbol absent from vocab.json is the unknown token.
  5. [start] + ids + [end], truncated to keep the end token within model_max_length (77), padded with the folder's
     padding token: SD 1.5's tokenizer and SDXL's `tokenizer` pad with <|endoftext|>, SDXL's `tokenizer_2` with '!'
     (id 0), as their tokenizer_config.json / special_tokens_map.json say.

The original CLIP tokenizer also ran ftfy and an HTML unescape; transformers' does not, and neither does this one.
"""
import functools
import json
import os
import unicodedata
from typing import Sequence

import numpy as np

from fewstep_jax import errors

END_OF_WORD = '</w>'
LITERALS = ('<|startoftext|>', '<|endoftext|>')
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
# Unicode's White_Space characters: what the regular expressions of transformers' CLIP tokenizer take for \s.
WHITE_SPACE = frozenset('\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000' +
                        ''.join(map(chr, range(0x2000, 0x200b))))
DEFAULT_SPECIAL_TOKENS = {'bos_token': '<|startoftext|>', 'eos_token': '<|endoftext|>',
                          'unk_token': '<|endoftext|>', 'pad_token': '<|endoftext|>'}
FILES = ('vocab.json', 'merges.txt')
CONFIG_FILES = ('tokenizer_config.json', 'special_tokens_map.json')  # The first that names a token wins.


@functools.cache
def byte_characters() -> tuple:
  """GPT-2's map of the 256 byte values to printable characters: the printable Latin-1 bytes are themselves, the
  others (controls, space, ...) 256 + their rank."""
  printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1), *range(ord('®'), ord('ÿ') + 1)]
  others = iter(range(256, 512))
  return tuple(chr(b) if b in printable else chr(next(others)) for b in range(256))


def _kind(character: str) -> str:
  """'space', 'letter', 'number' or 'other', the classes of rule 3."""
  if character in WHITE_SPACE:
    return 'space'
  category = unicodedata.category(character)[0]
  return {'L': 'letter', 'N': 'number'}.get(category, 'other')


def normalize(text: str) -> str:
  """Rule 2: NFC, white space runs to one space, lower case character by character."""
  text = unicodedata.normalize('NFC', text)
  spaced, previous_space = [], False
  for character in text:
    space = character in WHITE_SPACE
    if not (space and previous_space):
      spaced.append(' ' if space else character)
    previous_space = space
  return ''.join(character.lower() for character in spaced)


def split_words(text: str) -> list:
  """Rule 3 on normalised text. The start and end tokens, which normalisation may have written (from
  '<|ENDOFTEXT|>'), end the word before them and after them, but are three words: '<|', the letters, '|>' (transformers
  splits them off first, then its byte-level step splits them again)."""
  words, i = [], 0
  while i < len(text):
    literal = next((t for t in LITERALS if text.startswith(t, i)), None)
    if literal:
      words.extend((literal[:2], literal[2:-2], literal[-2:]))
      i += len(literal)
      continue
    contraction = next((c for c in CONTRACTIONS if text.startswith(c, i)), None)
    kind = _kind(text[i])
    if contraction:
      end = i + len(contraction)
    elif kind == 'number' or kind == 'space':
      end = i + 1
    else:
      end = i + 1
      while end < len(text) and _kind(text[end]) == kind:
        end += 1
    if kind != 'space':
      words.append(text[i:end])
    i = end
  return words


class CLIPTokenizer:
  """CLIP's BPE over `vocab` ({token: id}) and `merges` (pairs, highest priority first); `special` maps bos_token,
  eos_token, unk_token and pad_token to their strings, each of which must be in the vocabulary; the special tokens in
  `normalized` are also found after normalisation (rule 1); rows are `max_length` ids."""

  def __init__(self, vocab: dict, merges: Sequence, special: dict | None = None, max_length: int = 77,
               normalized: Sequence[str] = (), source: str = 'the vocabulary'):
    self.vocab = vocab
    self.ranks = {tuple(pair): rank for rank, pair in enumerate(merges)}
    self.special = dict(DEFAULT_SPECIAL_TOKENS, **(special or {}))
    by_length = sorted(set(self.special.values()), key=len, reverse=True)  # The longest where two start together.
    self.raw_specials = tuple(token for token in by_length if token not in normalized)
    self.normalized_specials = tuple(token for token in by_length if token in normalized)
    absent = sorted({token for token in self.special.values() if token not in vocab})
    if absent:
      raise errors.ConfigError(f'{source} lacks the special tokens {absent}: pass the tokenizer folder of the same '
                               'pipeline as its vocab.json')
    if max_length < 2:
      raise errors.ConfigError(f'{source}: model_max_length {max_length} leaves no room for the start and end tokens')
    self.max_length = max_length
    self.special_ids = {name: vocab[token] for name, token in self.special.items()}
    self._words = {}

  @classmethod
  def from_folder(cls, folder: str) -> 'CLIPTokenizer':
    """From a pipeline's tokenizer folder: vocab.json, merges.txt, and (optional) tokenizer_config.json and
    special_tokens_map.json for the special tokens and model_max_length."""
    for name in FILES:
      if not os.path.isfile(os.path.join(folder, name)):
        raise errors.InputNotFoundError(
            f'{os.path.join(folder, name)} not found; nothing is downloaded: pass a diffusers pipeline\'s tokenizer/ '
            f'or tokenizer_2/ folder, which holds {" and ".join(FILES)}')
    vocab = _read_json(os.path.join(folder, 'vocab.json'))
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
      raise errors.ConfigError(f'{os.path.join(folder, "vocab.json")} is not a JSON object of token ids')
    merges = _read_merges(os.path.join(folder, 'merges.txt'))
    special, normalized, max_length = _read_special_tokens(folder)
    return cls(vocab, merges, special, max_length, normalized, folder)

  def __call__(self, prompts: Sequence[str]) -> np.ndarray:
    """int32 [len(prompts), max_length]: each prompt's ids, truncated and padded as the pipelines call it."""
    if isinstance(prompts, str):
      prompts = [prompts]
    rows = np.full((len(prompts), self.max_length), self.special_ids['pad_token'], np.int32)
    for row, prompt in enumerate(prompts):
      ids = self.encode(prompt)
      ids = ids[:self.max_length - 1] + ids[-1:] if len(ids) > self.max_length else ids
      rows[row, :len(ids)] = ids
    return rows

  def encode(self, text: str) -> list:
    """[start] + text's ids + [end], neither truncated nor padded."""
    ids = [self.special_ids['bos_token']]
    for raw, is_special in _split_specials(text, self.raw_specials):
      if is_special:
        ids.append(self.vocab[raw])
        continue
      for piece, is_special in _split_specials(normalize(raw), self.normalized_specials):
        if is_special:
          ids.append(self.vocab[piece])
        else:
          ids.extend(i for word in split_words(piece) for i in self._word_ids(word))
    return ids + [self.special_ids['eos_token']]

  def _word_ids(self, word: str) -> list:
    if word not in self._words:
      unknown = self.special_ids['unk_token']
      self._words[word] = [self.vocab.get(symbol, unknown) for symbol in self.bpe(word)]
    return self._words[word]

  def bpe(self, word: str) -> list:
    """Rule 4: the word's symbols after merging, the last with '</w>'."""
    characters = byte_characters()
    symbols = [characters[b] for b in word.encode('utf-8')]
    symbols[-1] += END_OF_WORD
    while len(symbols) > 1:
      ranked = [(self.ranks.get(pair, len(self.ranks)), i) for i, pair in enumerate(zip(symbols, symbols[1:]))]
      rank, _ = min(ranked)
      if rank == len(self.ranks):
        break
      merged, i = [], 0
      while i < len(symbols):  # Every occurrence of the best pair, left to right.
        if i + 1 < len(symbols) and self.ranks.get((symbols[i], symbols[i + 1])) == rank:
          merged.append(symbols[i] + symbols[i + 1])
          i += 2
        else:
          merged.append(symbols[i])
          i += 1
      symbols = merged
    return symbols


def _split_specials(text: str, specials: tuple):
  """(piece, is_special) of `text`, the special tokens (longest first where two start at one place) cut out."""
  start = i = 0
  while i < len(text):
    token = next((t for t in specials if text.startswith(t, i)), None)
    if token:
      if start < i:
        yield text[start:i], False
      yield token, True
      i = start = i + len(token)
    else:
      i += 1
  if start < len(text):
    yield text[start:], False


def _read_special_tokens(folder: str) -> tuple:
  """(special tokens by name, those matched after normalisation, model_max_length) of a tokenizer folder's
  CONFIG_FILES, tokenizer_config.json's names over special_tokens_map.json's."""
  special, max_length, normalized, declared = {}, 77, {}, {}
  for name in reversed(CONFIG_FILES):
    path = os.path.join(folder, name)
    config = _read_json(path) if os.path.isfile(path) else {}
    if not isinstance(config, dict):
      raise errors.ConfigError(f'{path} holds no JSON object: replace it with the published file')
    for key in DEFAULT_SPECIAL_TOKENS:
      if config.get(key):
        special[key] = _token(config[key], path)
        normalized[special[key]] = normalized.get(special[key], True) and _is_normalized(config[key])
    for entry in (config.get('added_tokens_decoder') or {}).values():
      declared[_token(entry, path)] = _is_normalized(entry)
    max_length = config.get('model_max_length', max_length)
  normalized.update(declared)  # added_tokens_decoder states each token's flag outright.
  return special, [token for token, yes in normalized.items() if yes], int(max_length)


def _is_normalized(value) -> bool:
  """Whether a special token as the files write it is matched after normalisation: an AddedToken's "normalized";
  a plain string is not (transformers makes special tokens unnormalised)."""
  return isinstance(value, dict) and bool(value.get('normalized', False))


def _token(value, path: str) -> str:
  """A special token as the tokenizer files write it: a string, or an AddedToken's {"content": ...}."""
  if isinstance(value, dict) and isinstance(value.get('content'), str):
    return value['content']
  if isinstance(value, str):
    return value
  raise errors.ConfigError(f'{path}: a special token must be a string or {{"content": ...}}, not {value!r}')


def _read_json(path: str):
  try:
    with open(path, encoding='utf-8') as file:
      return json.load(file)
  except (OSError, ValueError) as error:
    raise errors.ConfigError(f'{path} cannot be read as JSON ({error}): replace it with the published file') from None


def _read_merges(path: str) -> list:
  """merges.txt's pairs, skipping its '#version' header and blank lines."""
  try:
    with open(path, encoding='utf-8') as file:
      lines = file.read().splitlines()
  except (OSError, UnicodeDecodeError) as error:
    raise errors.ConfigError(f'{path} cannot be read ({error}): replace it with the published file') from None
  merges = []
  for number, line in enumerate(lines, 1):
    if not line.strip() or (number == 1 and line.startswith('#version')):
      continue
    pair = line.split(' ')
    if len(pair) != 2 or not all(pair):
      raise errors.ConfigError(f'{path} line {number} is not a merge "left right": {line!r}; replace the file with '
                               'the published one')
    merges.append(tuple(pair))
  return merges
