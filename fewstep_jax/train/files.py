"""The run's small files (config.json, run_info.json, eval/results.json, and metrics.jsonl when a resume rewrites
it): written atomically, so that a crash or a full disk mid-write leaves the previous version whole, and read with
errors that name the file."""
import json
import os

import numpy as np

from fewstep_jax.errors import RunError


def write_json(path: str, obj, indent: int | None = 2):
  """Writes `obj` as JSON to `path` through a temporary file in the same directory and an atomic rename."""
  _write_atomically(path, lambda f: json.dump(obj, f, indent=indent))


def write_jsonl(path: str, rows: list):
  """Writes `rows` as JSON lines to `path`, atomically."""
  _write_atomically(path, lambda f: f.writelines(json.dumps(row) + '\n' for row in rows))


def write_text(path: str, text: str):
  """Writes `text` to `path`, atomically."""
  _write_atomically(path, lambda f: f.write(text))


def write_npz(path: str, arrays: dict):
  """Writes the numpy arrays `arrays` ({name: array}) as the .npz `path`, atomically, creating its directory."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  _write_atomically(path, lambda f: np.savez(f, **arrays), mode='wb')


def _write_atomically(path: str, write, mode: str = 'w'):
  temporary = f'{path}.tmp-{os.getpid()}'
  try:
    with open(temporary, mode) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


def read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as error:
    raise RunError(f'{path} is damaged ({error}); restore it from a copy, or start the run in a new --workdir '
                   'if it cannot be recovered') from error


def read_jsonl(path: str, *, repair_torn_tail: bool = False) -> list:
  """The rows of a JSON-lines file. A last line cut short by a crash is dropped (with a message) when
  repair_torn_tail; a damaged line anywhere else is an error naming the file and the line."""
  with open(path) as f:
    lines = f.read().split('\n')
  rows = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as error:
      is_tail = all(not rest.strip() for rest in lines[number:])
      if repair_torn_tail and is_tail:
        print(f'{path}: dropping its last line, cut short by an earlier crash: {line[:80]!r}', flush=True)
        continue
      raise RunError(f'{path}, line {number}, is damaged ({error}): {line[:80]!r}') from error
  return rows
