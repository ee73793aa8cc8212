"""Metric writers: progress (a tqdm bar on a terminal, plain lines elsewhere), metrics.jsonl and TensorBoard.
Only process 0 writes."""
import importlib.util
import json
import math
import os
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

from fewstep_jax.train import files


def format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(seconds)
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}h{minutes:02d}m{seconds:02d}s' if hours else f'{minutes}m{seconds:02d}s'


def in_notebook() -> bool:
  """Whether this process is a Jupyter kernel (IPython with a kernel attached)."""
  ipython = sys.modules.get('IPython')
  shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, 'get_ipython') else None
  return shell is not None and getattr(shell, 'kernel', None) is not None


# In a Jupyter kernel every redraw of a bar is an output message, which a saved notebook keeps: the bar is redrawn at
# most NOTEBOOK_REDRAWS times over its total, and at most once in NOTEBOOK_REDRAW_SECONDS.
NOTEBOOK_REDRAWS = 10
NOTEBOOK_REDRAW_SECONDS = 10.0


def progress(iterable=None, **kwargs):
  """tqdm on a terminal (stderr is a TTY); in a Jupyter kernel, tqdm's widget where ipywidgets is installed and its
  text bar otherwise (a kernel's stderr is no TTY, but renders one), redrawn a handful of times (NOTEBOOK_REDRAWS);
  nothing on a log file, where the callers print plain lines."""
  if in_notebook():
    total = kwargs.get('total') or (len(iterable) if hasattr(iterable, '__len__') else 0)
    kwargs.setdefault('mininterval', NOTEBOOK_REDRAW_SECONDS)
    kwargs.setdefault('miniters', max(1, total // NOTEBOOK_REDRAWS))
    if importlib.util.find_spec('ipywidgets') is not None:  # tqdm.notebook's widget needs it.
      from tqdm.notebook import tqdm as notebook_tqdm
      return notebook_tqdm(iterable, leave=True, **kwargs)
    return tqdm(iterable, disable=False, leave=True, file=sys.stderr, **kwargs)
  return tqdm(iterable, disable=None, dynamic_ncols=True, leave=False, file=sys.stderr, **kwargs)


def say(message: str):
  """A line that does not break a progress bar."""
  tqdm.write(message, file=sys.stdout)
  sys.stdout.flush()


def _tensorboard_writer(directory: str):
  try:
    from tensorboardX import SummaryWriter
  except ImportError:
    say("train.tensorboard: tensorboardX is not installed (pip install -e '.[tensorboard]'); logging to "
        'metrics.jsonl only')
    return None
  return SummaryWriter(directory)


def write_eval_tensorboard(workdir: str, step: int, rows: list):
  """Evaluation rows as TensorBoard scalars eval/<params>/<metric>/nfe<k> in workdir/tensorboard."""
  writer = _tensorboard_writer(os.path.join(workdir, 'tensorboard'))
  if writer is not None:
    for row in rows:
      writer.add_scalar(f'eval/{row["params"]}/{row["metric"]}/nfe{row["nfe"]}', row['value'], step)
    writer.close()


class MetricWriter:
  """Appends one JSON object per logged step to `metrics.jsonl` and mirrors scalars to TensorBoard, with the
  steps per second (TensorBoard only: metrics.jsonl holds only what an uninterrupted run would write, byte for
  byte), evaluation results and sample images.

  On resume from `start_step`, rows logged after that step by the interrupted run are dropped first, so the
  file reads exactly as it would after an uninterrupted run.
  """

  def __init__(self, workdir: str | None, start_step: int, total_steps: int, tensorboard: bool = True):
    """workdir=None: progress lines only, no files."""
    self.active = jax.process_index() == 0
    self.total_steps = total_steps
    self.path = None if workdir is None else os.path.join(workdir, 'metrics.jsonl')
    self._last_time = time.time()
    self._last_step = start_step
    self._tb = None
    self._bar = progress(total=total_steps, initial=start_step, unit='step') if self.active else None
    if not self.active or workdir is None:
      return
    if os.path.exists(self.path):  # A torn last row (a crash mid-append) is dropped with the later ones.
      files.write_jsonl(self.path, [row for row in files.read_jsonl(self.path, repair_torn_tail=True)
                                    if row['step'] <= start_step])
    if tensorboard:
      self._tb = _tensorboard_writer(os.path.join(workdir, 'tensorboard'))

  def advance(self, step: int):
    """The progress bar's position (every step; free when there is no bar)."""
    if self._bar is not None and not self._bar.disable:
      self._bar.update(step - self._bar.n)

  def write(self, step: int, scalars: dict):
    """scalars: name -> python float. Prints a progress line with steps/s and ETA."""
    if not self.active:
      return
    now = time.time()
    steps_per_s = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_time, self._last_step = now, step
    if self.path is not None:
      with open(self.path, 'a') as f:
        f.write(json.dumps({'step': step, **scalars}) + '\n')
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(name, value, step)
      self._tb.add_scalar('steps_per_s', steps_per_s, step)
    eta = (self.total_steps - step) / steps_per_s if steps_per_s > 0 else float('inf')
    terms = ' '.join(f'{name} {value:.5g}' for name, value in scalars.items() if name != 'loss')
    self.advance(step)
    say(f'step {step}/{self.total_steps} loss {scalars.get("loss", float("nan")):.5g} {terms} | '
        f'{steps_per_s:.2f} steps/s | ETA {format_duration(eta)}')

  def write_image(self, tag: str, image, step: int):
    """image: [H, W, C] uint8, or a path to a PNG written beside."""
    if self._tb is not None:
      if isinstance(image, str):
        from PIL import Image
        image = np.asarray(Image.open(image).convert('RGB'))
      self._tb.add_image(tag, image, step, dataformats='HWC')

  def close(self):
    if self._bar is not None:
      self._bar.close()
    if self._tb is not None:
      self._tb.close()
