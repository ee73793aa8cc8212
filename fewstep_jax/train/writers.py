"""Metric writers: stdout progress, metrics.jsonl and TensorBoard. Only process 0 writes."""
import json
import math
import os
import time

import jax

from fewstep_jax.train import files


def _format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(seconds)
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}h{minutes:02d}m{seconds:02d}s' if hours else f'{minutes}m{seconds:02d}s'


class MetricWriter:
  """Appends one JSON object per logged step to `metrics.jsonl` and mirrors scalars to TensorBoard.

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
    if not self.active or workdir is None:
      return
    if os.path.exists(self.path):  # A torn last row (a crash mid-append) is dropped with the later ones.
      rows = [row for row in files.read_jsonl(self.path, repair_torn_tail=True) if row['step'] <= start_step]
      temporary = self.path + '.tmp'
      with open(temporary, 'w') as f:
        f.writelines(json.dumps(row) + '\n' for row in rows)
      os.replace(temporary, self.path)
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

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
    eta = (self.total_steps - step) / steps_per_s if steps_per_s > 0 else float('inf')
    terms = ' '.join(f'{name} {value:.5g}' for name, value in scalars.items() if name != 'loss')
    print(f'step {step}/{self.total_steps} loss {scalars.get("loss", float("nan")):.5g} {terms} | '
          f'{steps_per_s:.2f} steps/s | ETA {_format_duration(eta)}', flush=True)

  def close(self):
    if self._tb is not None:
      self._tb.close()
