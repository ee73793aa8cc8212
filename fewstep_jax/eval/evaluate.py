"""--mode=eval and --mode=sample, and the sample images written during training.

Evaluators are registered per dataset (`EVALUATORS`): each turns samples into rows
{"method", "sampler", "nfe", "metric", "value", "reference", "step", "params"} of eval/results.json (merged
with the rows already there: see `merge_rows`), where `reference` is the metric's floor
(the value two independent samples of the true distribution reach at the same sample size), or the
classifier's own accuracy on real data.
"""
import functools
import os

import jax
import numpy as np

from fewstep_jax import sampling, stored_schedules
from fewstep_jax.eval import metrics, plots
from fewstep_jax.train import files, sharding, writers
from fewstep_jax.train.state import ema_rate
from fewstep_jax.train.workdir import check_writable

# A row of eval/results.json is identified by these: a new evaluation replaces the rows it recomputes and keeps
# the others (other NFEs, other steps, other parameter copies).
ROW_KEY = ('method', 'sampler', 'nfe', 'metric', 'step', 'params')


def generate(run, params, nfe: int, n: int, seed: int):
  """n samples [n, *data_shape] (numpy) and their labels ([n] or None) with `nfe` network evaluations (on the
  stored schedule of eval.schedule where it holds one for this NFE)."""
  labels = sampling.sample_labels(n, run.data.num_classes)
  key = jax.random.fold_in(run.sample_key, seed)
  samples = _sample_fn(run, n, nfe, stored_grid(run.config, nfe))(params, key, labels=labels)
  return np.asarray(jax.device_get(samples)), None if labels is None else np.asarray(labels)


def stored_grid(config, nfe: int):
  """The grid eval.schedule stores for `nfe` (a tuple), or None (no schedule file, or none for this NFE)."""
  if not config.eval.get('schedule'):
    return None
  if config.method.name not in stored_schedules.SCHEDULE_MAPS:
    raise ValueError(f'eval.schedule is a schedule for ODE teachers ({sorted(stored_schedules.SCHEDULE_MAPS)}); '
                     f'method {config.method.name!r} has its own few-step sampler: unset it.')
  return stored_schedules.grid_for(config.eval.schedule, config.method.name, config.method.solver, nfe)


@functools.lru_cache(maxsize=32)
def _sample_fn(run, n: int, nfe: int, grid=None):
  """One compiled sampler per (run, n, nfe, stored grid), reused by every sample grid of a training run."""
  options = {} if grid is None else {'grid': grid}
  # Replicated output: every process can read the samples, also when the parameters are sharded.
  return jax.jit(functools.partial(run.method.sample, n=n, nfe=nfe, **options),
                 out_shardings=sharding.replicated(run.mesh))


class ToyMetrics:
  """2-D data: sliced Wasserstein-2 and RBF MMD against fresh samples of the true distribution."""

  def __init__(self, run, n: int, seed: int):
    self.reference = run.data.reference_samples(n, 'test', seed)['x']
    independent = run.data.reference_samples(n, 'test', seed + 1)['x']
    self.key = jax.random.PRNGKey(seed)
    self.floors = {name: fn(independent) for name, fn in self._metrics().items()}

  def _metrics(self):
    return {
        'sliced_w2': lambda x: float(metrics.sliced_wasserstein2(x, self.reference, self.key)),
        'mmd_rbf': lambda x: float(metrics.mmd_rbf(x, self.reference)),
    }

  def rows(self, samples, labels):
    del labels
    return [(name, fn(samples), self.floors[name]) for name, fn in self._metrics().items()]


class DigitsMetrics:
  """Digits: Frechet distance in the shipped classifier's features (floor: test vs train split) and the
  classifier's accuracy on class-conditional samples (reference: its accuracy on the test split)."""

  def __init__(self, run, n: int, seed: int):
    del run
    from fewstep_jax.eval.digits_eval import DigitsEvaluator
    from fewstep_jax.data.digits_arrays import load_digits_arrays, to_model_range
    self.features = DigitsEvaluator()
    images, labels = load_digits_arrays('test')
    self.floor = float(self.features.floor(n, seed))
    self.test_accuracy = float(self.features.class_accuracy(to_model_range(images), labels))

  def rows(self, samples, labels):
    rows = [('frechet_digits', float(self.features.frechet(samples)), self.floor)]
    if labels is not None:
      rows.append(('class_accuracy', float(self.features.class_accuracy(samples, labels)),
                   self.test_accuracy))
    return rows


EVALUATORS = {'toy': ToyMetrics, 'digits': DigitsMetrics}


def evaluate(run, state, workdir: str, step: int):
  """Evaluates the state at every config.eval.nfe and writes workdir/eval/results.json. Returns the rows."""
  config = run.config
  if run.data.evaluator not in EVALUATORS:
    raise ValueError(f'no embedded evaluator for data.name={config.data.name!r} (available for '
                     f'{sorted(EVALUATORS)}); use --mode=sample and an external metric for this dataset.')
  directory = os.path.join(workdir, 'eval')
  if jax.process_index() == 0:  # Before minutes of sampling whose results could not be written.
    check_writable(directory)
  n, seed = config.eval.num_samples, config.eval.seed
  evaluator = EVALUATORS[run.data.evaluator](run, n, seed)
  rows = []
  copies = parameter_copies(config.eval.params, step)
  print(f'evaluating step {step} ({", ".join(copies)}) at NFE {tuple(config.eval.nfe)} on {n} samples', flush=True)
  for name in copies:
    params = run.method.sampling_params(state, name)
    for nfe in writers.progress(config.eval.nfe, desc='eval', unit='nfe'):
      samples, labels = generate(run, params, nfe, n, seed)
      for metric, value, reference in evaluator.rows(samples, labels):
        rows.append({'method': config.method.name, 'sampler': sampler_name(config), 'nfe': int(nfe),
                     'metric': metric, 'value': value, 'reference': reference, 'step': int(step), 'params': name})
        writers.say(f'{name:12s} nfe {nfe:3d}  {metric:16s} {value:.5g}  (reference {reference:.5g})')
  if jax.process_index() == 0:
    path = os.path.join(directory, 'results.json')
    files.write_json(path, merge_rows(files.read_json(path) if os.path.exists(path) else [], rows))
    if config.train.tensorboard:
      writers.write_eval_tensorboard(workdir, step, rows)
    print(f'results: {path}', flush=True)
  return rows


# An EMA copy that still holds more than this fraction of the initial weights (rate ** step) is reported beside
# the raw parameters: after a short run (200 steps at rate 0.999: 82%) the average is mostly the initialisation.
EMA_INIT_WEIGHT_LIMIT = 0.05


def parameter_copies(name: str, step: int) -> list:
  """The parameter copies to evaluate: eval.params, plus the raw parameters while that EMA is young."""
  rate = ema_rate(name)
  if rate is not None and rate ** step > EMA_INIT_WEIGHT_LIMIT:
    print(f'eval.params={name} after only {step} steps still averages in {rate ** step:.0%} of the initial '
          'weights: the raw parameters are evaluated too', flush=True)
    return [name, 'params']
  return [name]


def sampler_name(config) -> str:
  """The sampling options a row's numbers depend on besides the NFE: the solver and the guidance scale."""
  hp = config.method
  parts = [hp.get('solver', 'default')]
  if hp.get('guidance', 1.0) != 1.0:
    parts.append(f'guidance {hp.guidance:g}')
  if config.eval.get('schedule'):
    parts.append(f'schedule {os.path.basename(config.eval.schedule)}')
  return ', '.join(parts)


def merge_rows(old: list, new: list) -> list:
  """`old` rows with those `new` recomputes (same ROW_KEY) replaced, then the new ones; sorted by step, NFE and
  metric."""
  key = lambda row: tuple(row.get(field) for field in ROW_KEY)
  replaced = {key(row) for row in new}
  merged = [row for row in old if key(row) not in replaced] + list(new)
  return sorted(merged, key=lambda row: (row.get('step', 0), row.get('params', ''), row.get('sampler', ''),
                                         row['nfe'], row['metric']))


def _sampler_slug(config) -> str:
  return ''.join(c if c.isalnum() else '_' for c in sampler_name(config).replace(', ', '_').replace(' ', ''))


def _unused(path: str) -> str:
  """`path`, or path with .1, .2, ... before its extension if a file of that name exists."""
  stem, extension = os.path.splitext(path)
  number = 1
  while os.path.exists(path):
    path, number = f'{stem}.{number}{extension}', number + 1
  return path


def write_samples(run, state, workdir: str, step: int):
  """Writes samples/step_<step>_nfe<nfe>_<sampler>.png for every config.eval.nfe: an image grid, or a 2-D
  scatter plot over reference points; latents (not 1 or 3 channels) go to .npy files for decoding. An existing
  file is never replaced: the new one gets a .1, .2, ... suffix. Returns the paths written."""
  config = run.config
  directory = os.path.join(workdir, 'samples')
  os.makedirs(directory, exist_ok=True)
  params = run.method.sampling_params(state)
  is_points = len(run.data.data_shape) == 1
  n = config.eval.sample_grid * (16 if is_points else 1)
  reference = run.data.reference_samples(n, 'test', config.eval.seed)['x'] if is_points else None
  written = []
  for nfe in config.eval.nfe:
    # Every process takes part in sampling (the parameters may be sharded); only process 0 writes.
    samples, _ = generate(run, params, nfe, n, config.eval.seed)
    if jax.process_index() != 0:
      continue
    path = os.path.join(directory, f'step_{step:07d}_nfe{nfe}_{_sampler_slug(config)}.png')
    if not is_points and run.data.data_shape[-1] not in (1, 3):
      # Latents: stored as arrays for an external decoder (no VAE ships here).
      path = _unused(path.replace('.png', '.npy'))
      np.save(path, samples)
    elif is_points:
      path = _unused(path)
      plots.save_scatter(path, samples, reference=reference, title=f'{config.method.name}, step {step}, '
                         f'{nfe} NFE')
    else:
      path = _unused(path)
      plots.save_image_grid(path, samples, ncol=int(np.ceil(np.sqrt(n))))
    written.append(path)
  if written:
    print(f'samples of step {step} ({config.eval.params}) written: {", ".join(written)}', flush=True)
  return written
