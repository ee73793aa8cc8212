"""--mode=eval and --mode=sample, and the sample images written during training.

Evaluators are registered by name (`EVALUATORS`; eval.metrics picks them, or the dataset's default ones of
`DEFAULT_METRICS`): each takes the samples batch by batch (`start`, `add`, `finish`) and turns them into rows
{"method", "sampler", "nfe", "metric", "value", "reference", "step", "params"} of eval/results.json (merged
with the rows already there: see `merge_rows`), where `reference` is the metric's floor
(the value two independent samples of the true distribution reach at the same sample size), the
classifier's own accuracy on real data, or None (FID, IS).

Samples come from `generate_batches`: sample i from its own key and label, so that a metric does not depend on the
batch size, the device count or the number of hosts.
"""
import functools
import itertools
import os
import time

import jax
import numpy as np
from jax.sharding import PartitionSpec

from fewstep_jax import sampler_grids, sampling
from fewstep_jax.data import latents as latents_lib
from fewstep_jax.data import toy as toy_data
from fewstep_jax.errors import ConfigError
from fewstep_jax.eval import dinov2, features, metrics, plots
from fewstep_jax.eval.clip_score import ClipScoreMetrics
from fewstep_jax.eval.stats import FeatureStats, inception_score, load_stats
from fewstep_jax.mesh_axes import BATCH_AXES
from fewstep_jax.train import files, sharding, writers
from fewstep_jax.train.state import ema_rate
from fewstep_jax.train.workdir import check_writable

# A row of eval/results.json is identified by these: a new evaluation replaces the rows it recomputes and keeps
# the others (other NFEs, other steps, other parameter copies).
ROW_KEY = ('method', 'sampler', 'nfe', 'metric', 'step', 'params')


def eval_batch_size(config, mesh, n: int | None = None) -> int:
  """Samples per sampling call: eval.batch_size (or n if fewer) rounded up to a multiple of the device count."""
  return sharding.device_multiple(config.eval.batch_size if n is None else min(n, config.eval.batch_size), mesh)


def generate_batches(run, params, nfe: int, n: int, seed: int, batch_size: int, solver: str | None = None):
  """Yields (samples [batch_size, *data_shape] (a replicated jax array), their conditions (numpy: labels
  [batch_size], a text condition's arrays, or None), count) for samples 0..n-1 in order, `count` the leading rows
  that belong to them (the last batch is padded).

  Sample i comes from its own key fold_in(fold_in(sample_key, seed), i) and has the condition
  `Conditioning.for_samples` gives it (label i % num_classes), so it is the same array whatever the batch size, the
  device count or the number of hosts. `solver` replaces the method's ODE
  solver (see `solvers`). The compiled sampler is `compiled_sampler`'s, reused by every batch."""
  sample = compiled_sampler(run, batch_size, nfe, solver)
  decode = latent_decoder(run)
  key = jax.random.fold_in(run.sample_key, seed)
  index_sharding = sharding.batch_sharding(run.mesh)
  for start in range(0, n, batch_size):
    indices = np.arange(start, start + batch_size, dtype=np.int32)
    global_indices = jax.make_array_from_callback(indices.shape, index_sharding, lambda index: indices[index])
    labels = run.method.conditioning.for_samples(indices)
    samples = sample(params, key, global_indices)
    yield (samples if decode is None else decode(samples)), labels, min(batch_size, n - start)


# A VAE's decoded images in this project's [-1, 1], by the range its encoder saw (latents.PIXEL_RANGES).
IMAGES_FROM_PIXELS = {'signed': lambda images: images, 'unit': lambda images: 2.0 * images - 1.0}


def latent_vae(run):
  """(the SD-VAE's weights, a file or folder; latents.LatentNorm) that decode the run's samples, or None: the data's
  own (data 'pipeline_prompts': its pipeline's VAE and scaling factor), else data.vae with data.latent_norm for
  latents data."""
  own = getattr(getattr(run, 'data', None), 'latent_vae', None)  # A run given as its config alone has no data.
  if own is not None:
    return own
  data_config = run.config.data
  if data_config.name != 'latents' or not data_config.get('vae', ''):
    return None
  return data_config.vae, latents_lib.latent_norm(data_config)


def latent_decoder(run):
  """jit(latent samples [B, h, w, c]) -> images [B, H, W, 3] in [-1, 1] through the SD-VAE of `latent_vae` (the
  samples mapped back by its LatentNorm first: (x - shift) / scale; a VAE that encoded images in [0, 1], EDM2's,
  decodes to [0, 1], mapped to [-1, 1]), or None where the run has none. Built once per run; the VAE's parameters
  are an argument of the compiled function (replicated), not constants in it."""
  source = latent_vae(run)
  if source is None:
    return None
  cached = getattr(run, '_latent_decoder', None)
  if cached is not None:
    return cached
  from fewstep_jax.nn import sd_vae
  path, norm = source
  vae, vae_params = sd_vae.load(path)
  vae_params = jax.device_put(vae_params, sharding.replicated(run.mesh))
  to_signed = IMAGES_FROM_PIXELS[norm.pixels]
  decode = jax.jit(lambda p, z: jax.numpy.clip(to_signed(vae.apply({'params': p}, (z - norm.shift) / norm.scale,
                                                                   method=vae.decode)), -1.0, 1.0),
                   in_shardings=(sharding.replicated(run.mesh), sharding.batch_sharding(run.mesh)),
                   out_shardings=sharding.replicated(run.mesh))
  run._latent_decoder = functools.partial(decode, vae_params)
  return run._latent_decoder


def generate(run, params, nfe: int, n: int, seed: int):
  """n samples [n, *data_shape] (numpy) and their labels ([n] or None) with `nfe` network evaluations (on the
  stored grid of eval.grid_file where it holds one for this NFE); see generate_batches."""
  batches = [(np.asarray(samples)[:count], leading(labels, count))
             for samples, labels, count in generate_batches(run, params, nfe, n, seed,
                                                            eval_batch_size(run.config, run.mesh, n))]
  labels = None if batches[0][1] is None else jax.tree.map(lambda *parts: np.concatenate(parts),
                                                             *[labels for _, labels in batches])
  return np.concatenate([samples for samples, _ in batches]), labels


def leading(conditions, count: int):
  """The first `count` rows of conditions (labels or a text condition's arrays, as numpy), or None."""
  return None if conditions is None else jax.tree.map(lambda leaf: np.asarray(leaf)[:count], conditions)


def stored_grid(run, nfe: int, solver: str | None = None):
  """The grid eval.grid_file stores for `nfe` and the solver (a tuple), or None (no file, or none for this NFE)."""
  config = run.config
  if not config.eval.get('grid_file'):
    return None
  if not run.method.ode_solvers:
    raise ConfigError(f'eval.grid_file holds sampler grids of ODE samplers; method {config.method.name!r} has its own '
                      'few-step sampler: unset it.')
  return sampler_grids.grid_for(config.eval.grid_file, config.method.name, solver or config.method.solver, nfe)


def solvers(run) -> tuple:
  """The ODE solvers eval.solvers names (each evaluated in its own rows), or (None,): the method's own sampler."""
  config = run.config
  if not config.eval.solvers:
    return (None,)
  if not run.method.ode_solvers:
    raise ConfigError(f'eval.solvers chooses the solver of an ODE sampler; method {config.method.name!r} has its own '
                      'few-step sampler: unset it.')
  unknown = [name for name in config.eval.solvers if name not in run.method.ode_solvers]
  if unknown:
    raise ConfigError(f'unknown eval.solvers {unknown}; known: {sorted(run.method.ode_solvers)}')
  return tuple(config.eval.solvers)


def nfe_problem(method, nfe: int, conditional: bool, solver: str | None = None, grid=None) -> str | None:
  """Why the method's sampler cannot spend exactly `nfe` network calls (with `solver` and a stored `grid`), from its
  `sampling_plan`: e.g. an odd NFE under classifier-free guidance, where a step costs two calls. None if it can."""
  try:
    method.sampling_plan(int(nfe), conditional, solver=solver, grid=grid)
  except ValueError as error:
    return str(error)
  return None


def check_nfes(run, nfes=None, solver_names=None):
  """A ConfigError naming eval.nfe unless the run's sampler can spend each of `nfes` (default eval.nfe) with each
  of `solver_names` (default `solvers`): checked before weights load or sampling starts, not midway through."""
  config = run.config
  nfes = tuple(int(nfe) for nfe in (config.eval.nfe if nfes is None else nfes))
  solver_names = solvers(run) if solver_names is None else tuple(solver_names)
  conditional = run.method.conditioning.conditional

  def problem(nfe):  # The first solver's reason, or None.
    return next(filter(None, (nfe_problem(run.method, nfe, conditional, solver, stored_grid(run, nfe, solver))
                              for solver in solver_names)), None)

  problems = {nfe: why for nfe in nfes if (why := problem(nfe)) is not None}
  if not problems:
    return
  nfe, why = next(iter(problems.items()))
  # The requested NFEs with each impossible one moved up by one (a guided sampler's even count), if that works.
  nearest = tuple(dict.fromkeys(n + 1 if n in problems else n for n in nfes))
  hint = ('' if any(problem(n) for n in nearest) else
          f", e.g. --config.eval.nfe='({','.join(map(str, nearest))}{',' if len(nearest) == 1 else ''})'")
  raise ConfigError(f'eval.nfe={nfes}: this sampler cannot spend {nfe} network calls ({why.rstrip(".")}). Set '
                    f'--config.eval.nfe to NFEs it can spend{hint}.')


def compiled_sampler(run, batch_size: int, nfe: int, solver: str | None = None):
  """The sampler generate_batches calls: (params, key, indices [batch_size]) -> samples, the method's plan of `nfe`
  (and of its stored grid) bound to one function compiled per (run, batch size, static sampling options): the
  plan's arrays are its arguments, so every NFE, stored grid, the end-of-training evaluation, the sample grids and
  --mode=eval share one compilation."""
  plan = run.method.sampling_plan(nfe, run.method.conditioning.conditional, solver=solver,
                                  grid=stored_grid(run, nfe, solver))
  return PlannedSampler(_sample_fn(run, batch_size), plan)


class PlannedSampler:
  """A compiled sampler bound to one plan; called, lowered and counted like a jitted function."""

  def __init__(self, compiled, plan):
    self.compiled, self.plan = compiled, plan

  def __call__(self, params, key, indices):
    return self.compiled(params, key, indices, self.plan)

  def lower(self, params, key, indices):
    return self.compiled.lower(params, key, indices, self.plan)

  def _cache_size(self) -> int:
    return self.compiled._cache_size()  # pylint: disable=protected-access


@functools.lru_cache(maxsize=32)
def _sample_fn(run, batch_size: int):
  """jit(params, key, indices [batch_size], plan) -> samples: every device draws its share of the indices, one
  sample per index from its own key (the method's `sample` vmapped over them), under shard_map, so that kernels XLA
  cannot partition (Pallas attention) run per device as in training. The plan is replicated (its static options key
  jit's cache). The output is replicated: every process can read it, also when the parameters are sharded."""
  del batch_size  # A key of the cache only: jit compiles per input shape anyway.
  conditioning = run.method.conditioning

  def one_sample(params, key, condition, plan):
    conditions = None if condition is None else jax.tree.map(lambda leaf: leaf[None], condition)
    return run.method.sample(params, key, 1, plan, conditions)[0]

  def device_share(params, key, indices, plan):
    keys = jax.vmap(lambda index: jax.random.fold_in(key, index))(indices)
    conditions = conditioning.for_samples(indices)
    return jax.vmap(one_sample, in_axes=(None, 0, 0, None))(params, keys, conditions, plan)

  batch = PartitionSpec(BATCH_AXES)
  # check_vma=False: Pallas kernels' outputs carry no varying-axes type.
  shared = jax.shard_map(device_share, mesh=run.mesh, in_specs=(PartitionSpec(), PartitionSpec(), batch,
                                                                PartitionSpec()),
                         out_specs=batch, check_vma=False)
  return jax.jit(shared, out_shardings=sharding.replicated(run.mesh))


class InMemoryMetrics:
  """Evaluators whose metrics need every sample at once (`rows(samples, labels)`): batches are gathered on the
  host."""

  def start(self):
    self._parts = []

  def add(self, samples, labels, count: int):
    self._parts.append((np.asarray(samples)[:count], leading(labels, count)))

  def finish(self) -> list:
    samples = np.concatenate([part for part, _ in self._parts])
    labels = None if self._parts[0][1] is None else jax.tree.map(lambda *parts: np.concatenate(parts),
                                                                  *[labels for _, labels in self._parts])
    return self.rows(samples, labels)


class ToyMetrics(InMemoryMetrics):
  """2-D data: sliced Wasserstein-2 and RBF MMD against fresh samples of the true distribution, and in the
  distribution's own geometry (data/toy.py TOY_GEOMETRY) the share of samples off its support (a ring of samples
  bridging 8 gaussians' modes, which sliced W2 averages away) and the share of its parts covered (a dropped mode).
  The reference of each is its value for an independent true sample of the same size."""

  def __init__(self, run, n: int, seed: int):
    self.reference = run.data.reference_samples(n, 'test', seed)['x']
    independent = run.data.reference_samples(n, 'test', seed + 1)['x']
    self.key = jax.random.PRNGKey(seed)
    self.toy = getattr(run.data, 'name', '')
    self.floors = {name: fn(independent) for name, fn in self._metrics().items()}

  def _metrics(self):
    shown = {
        'sliced_w2': lambda x: float(metrics.sliced_wasserstein2(x, self.reference, self.key)),
        'mmd_rbf': lambda x: float(metrics.mmd_rbf(x, self.reference)),
    }
    if self.toy in toy_data.TOY_GEOMETRY:
      shown.update(off_support=lambda x: toy_data.off_support_share(self.toy, x),
                   parts_covered=lambda x: toy_data.parts_covered(self.toy, x))
    return shown

  def rows(self, samples, labels):
    del labels
    return [(name, fn(samples), self.floors[name]) for name, fn in self._metrics().items()]


class DigitsMetrics(InMemoryMetrics):
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
    if labels is not None and not isinstance(labels, dict):  # Class labels, not a text condition.
      rows.append(('class_accuracy', float(self.features.class_accuracy(samples, labels)),
                   self.test_accuracy))
    return rows


class DigitsTextMetrics(DigitsMetrics):
  """Captioned digits (data 'digits_text'): the digits' Frechet distance, and how well samples follow their captions:
  caption_accuracy, the share whose classifier digit is the caption's, and attribute_agreement, the share of the
  attributes captions name whose measured word on the sample is the caption's (eval/digits_eval.py
  `caption_scores`). Sample i has evaluation prompt i mod N (Conditioning.for_samples), so its caption is looked up
  by its index; the conditions the samples came with are checked against those prompts. References: the same scores
  of the test images under their own captions."""

  def __init__(self, run, n: int, seed: int):
    from fewstep_jax.data import digits_text
    from fewstep_jax.eval.digits_eval import caption_scores, real_caption_scores
    super().__init__(run, n, seed)
    conditioning = run.method.conditioning
    self.captioned = conditioning.kind == 'text'  # An unconditional model of the digits has no captions to follow.
    if self.captioned:
      self.captions = digits_text.evaluation_captions()
      self.prompt_pooled = np.asarray(conditioning.prompts['pooled'])
      self.scores = functools.partial(caption_scores, self.features)
      self.references = real_caption_scores(self.features)

  def rows(self, samples, conditions):
    if not self.captioned:
      return super().rows(samples, None)
    indices = np.arange(len(samples)) % len(self.captions)
    if conditions is not None and not np.allclose(np.asarray(conditions['pooled']), self.prompt_pooled[indices]):
      raise RuntimeError('the samples\' conditions are not the evaluation prompts i mod N in sample order; the '
                         'caption scores would be against the wrong captions')
    scores = self.scores(samples, [self.captions[i] for i in indices])
    rows = super().rows(samples, None)
    return rows + [(name, scores[name], self.references[name]) for name in scores]


def _sample_count_name(n: int) -> str:
  return f'{n // 1000}k' if n % 1000 == 0 else str(n)


class FrechetMetrics:
  """The Frechet distance between a feature network's statistics of the samples and the dataset's reference
  statistics (eval.<reference_field>); the network's weights are eval.<weights_field>."""

  network = ''  # A key of features.EXTRACTORS.
  weights_field = ''
  reference_field = ''

  def __init__(self, run, n: int, seed: int):
    del seed
    config = run.config.eval
    path = config[self.reference_field]
    if not path:  # Checked before minutes of loading weights.
      raise ValueError(f'{self.network} metrics need the dataset\'s reference statistics: set '
                       f'--config.eval.{self.reference_field}=FILE.npz (published ones, or python -m '
                       f'fewstep_jax.eval.stats --config=CONFIG --features={self.network} --weights=WEIGHTS '
                       '--out=FILE.npz)')
    mu, sigma = load_stats(path)
    self.extract, dim = features.EXTRACTORS[self.network](config[self.weights_field], run.mesh,
                                                          self.resolution(config))
    if mu.shape != (dim,):
      raise ValueError(f'{path} holds statistics of {mu.shape[0]}-dimensional features, not the {self.network} '
                       f'features ({dim})')
    self.reference = (mu, sigma)
    self.name = _sample_count_name(n)

  def resolution(self, config) -> int:
    raise NotImplementedError

  def start(self):
    self.stats, self.logits = FeatureStats(), []

  def add(self, samples, labels, count: int):
    del labels
    values, logits = self.extract(samples)
    self.stats.update(np.asarray(values)[:count])
    if logits is not None:
      self.logits.append(np.asarray(logits)[:count])

  def distance(self) -> float:
    return metrics.frechet_distance(*self.stats.mu_sigma(), *self.reference)


class InceptionMetrics(FrechetMetrics):
  """Images: FID (eval.reference_stats) and the Inception Score (mean and standard deviation over 10 splits) from
  the FID Inception-v3 of eval/inception.py (weights eval.inception). Rows fid_<n>, is_<n>, is_<n>_std, n the sample
  count (50k for 50000); no floor is reported."""

  network, weights_field, reference_field = 'inception', 'inception', 'reference_stats'

  def resolution(self, config) -> int:
    return config.inception_resolution

  def finish(self) -> list:
    logits = np.concatenate(self.logits)
    score, spread = inception_score(logits, splits=min(10, len(logits)))
    return [(f'fid_{self.name}', self.distance(), None), (f'is_{self.name}', score, None),
            (f'is_{self.name}_std', spread, None)]


class DinoMetrics(FrechetMetrics):
  """Images: FD-DINOv2 as EDM2 computes it (eval/dinov2.py; weights eval.dinov2, reference statistics
  eval.dinov2_reference_stats). Row fd_dinov2_<n>."""

  network, weights_field, reference_field = 'dinov2', 'dinov2', 'dinov2_reference_stats'

  def resolution(self, config) -> int:
    del config
    return dinov2.RESOLUTION

  def finish(self) -> list:
    return [(f'fd_dinov2_{self.name}', self.distance(), None)]


EVALUATORS = {'toy': ToyMetrics, 'digits': DigitsMetrics, 'digits_text': DigitsTextMetrics,
              'inception': InceptionMetrics, 'dinov2': DinoMetrics, 'clip_score': ClipScoreMetrics}
# What each dataset is evaluated with when eval.metrics is empty.
DEFAULT_METRICS = {'toy': ('toy',), 'digits': ('digits',), 'digits_text': ('digits_text',), 'tfds': ('inception',)}


def metric_names(config, data) -> tuple:
  """The EVALUATORS config.eval.metrics names, or the dataset's default ones (empty: no embedded evaluator)."""
  names = tuple(config.eval.metrics) or DEFAULT_METRICS.get(data.evaluator, ())
  unknown = [name for name in names if name not in EVALUATORS]
  if unknown:
    raise ConfigError(f'unknown eval.metrics {unknown}; use some of {sorted(EVALUATORS)}')
  if 'digits_text' in names and data.evaluator != 'digits_text':
    raise ConfigError(f"eval.metrics {names}: 'digits_text' scores samples against the captions of data.name="
                      f"'digits_text', not data {data.evaluator!r}; use 'digits' for the digits")
  points = data.evaluator == 'toy'
  if (points and set(names) != {'toy'}) or (not points and 'toy' in names):
    raise ConfigError(f'eval.metrics {names} do not fit data {data.evaluator!r}: the toy metrics are for 2-D points '
                      'only')
  return names


def unset_files(config, names) -> list:
  """The eval.* file fields the metrics `names` need that are empty (FID's weights and statistics, ...)."""
  unset = []
  for name in names:
    evaluator = EVALUATORS[name]
    if issubclass(evaluator, FrechetMetrics):
      unset += [f'eval.{field}' for field in (evaluator.weights_field, evaluator.reference_field)
                if not config.eval[field]]
    if evaluator is ClipScoreMetrics and not config.eval.get('clip', ''):
      unset.append('eval.clip')
  return unset


class SampleProgress:
  """A line every `every` seconds (and at the end): samples done, samples/s and the time left."""

  def __init__(self, total: int, label: str, every: float = 15.0):
    self.total, self.label, self.every = total, label, every
    self.done, self.start = 0, time.perf_counter()
    self.last = self.start

  def update(self, count: int):
    self.done += count
    now = time.perf_counter()
    if now - self.last < self.every and self.done < self.total:
      return
    self.last = now
    rate = self.done / max(now - self.start, 1e-9)
    if self.done >= self.total:
      when = f'done in {writers.format_duration(now - self.start)}'
    else:
      when = f'ETA {writers.format_duration((self.total - self.done) / rate)}'
    writers.say(f'{self.label}: {self.done}/{self.total} samples, {rate:.1f} samples/s, {when}')


def evaluation_rows(run, state, step: int, *, nfe=None, num_samples: int | None = None, params=None) -> list:
  """The rows of every parameter copy, solver and NFE with the metrics of `metric_names`, computed in memory (nothing
  is written). nfe (a sequence), num_samples and params (a parameter copy's name, e.g. 'ema_0.999') default to
  config.eval's nfe, num_samples and params (with the raw parameters too while that EMA is young)."""
  config = run.config
  names = metric_names(config, run.data)
  if not names:
    raise ConfigError(f'no embedded evaluator for data.name={config.data.name!r} (set eval.metrics to some of '
                      f'{sorted(EVALUATORS)}, e.g. inception for images); or use --mode=sample and an external '
                      'metric.')
  nfes = tuple(config.eval.nfe if nfe is None else nfe)
  n, seed = config.eval.num_samples if num_samples is None else int(num_samples), config.eval.seed
  chosen_solvers = solvers(run)  # Checked before the evaluators load their weights.
  check_nfes(run, nfes, chosen_solvers)
  evaluators = [EVALUATORS[name](run, n, seed) for name in names]
  batch_size = eval_batch_size(config, run.mesh)
  rows = []
  copies = parameter_copies(config.eval.params, step) if params is None else [params]
  print(f'evaluating step {step} ({", ".join(copies)}) at NFE {nfes} on {n} samples '
        f'({", ".join(names)}; {batch_size} a batch)', flush=True)
  for name, solver, steps in itertools.product(copies, chosen_solvers, nfes):
    copy = run.sampling_params(state, name)
    for evaluator in evaluators:
      evaluator.start()
    progress = SampleProgress(n, f'{name} nfe {steps}' + (f' {solver}' if solver else ''))
    for samples, labels, count in generate_batches(run, copy, steps, n, seed, batch_size, solver):
      for evaluator in evaluators:
        evaluator.add(samples, labels, count)
      progress.update(count)
    for evaluator in evaluators:
      for metric, value, reference in evaluator.finish():
        rows.append({'method': config.method.name, 'sampler': sampler_name(config, solver), 'nfe': int(steps),
                     'metric': metric, 'value': value, 'reference': reference, 'step': int(step), 'params': name})
        writers.say(f'{name:12s} nfe {steps:3d}  {metric:16s} {value:.5g}'
                    + ('' if reference is None else f'  (reference {reference:.5g})'))
  return rows


def evaluate(run, state, workdir: str, step: int):
  """Evaluates the state at every config.eval.nfe with the metrics of `metric_names` (`evaluation_rows`) and writes
  workdir/eval/results.json, results.md (a table) and results.png (metric against NFE). Returns the new rows."""
  directory = os.path.join(workdir, 'eval')
  if jax.process_index() == 0:  # Before minutes of sampling whose results could not be written.
    check_writable(directory)
  rows = evaluation_rows(run, state, step)
  if jax.process_index() == 0:
    path = os.path.join(directory, 'results.json')
    merged = merge_rows(files.read_json(path) if os.path.exists(path) else [], rows)
    files.write_json(path, merged)
    files.write_text(os.path.join(directory, 'results.md'), results_table(merged))
    plots.save_metric_curves(os.path.join(directory, 'results.png'), merged)
    if run.config.train.tensorboard:
      writers.write_eval_tensorboard(workdir, step, rows)
    print(f'results: {path} (table results.md, plot results.png)', flush=True)
  return rows


def results_table(rows: list) -> str:
  """Markdown: a line per (step, params, sampler, metric), a column per NFE."""
  nfes = sorted({row['nfe'] for row in rows})
  lines = {}
  for row in rows:
    key = (row.get('step', 0), row.get('params', ''), row.get('sampler', ''), row['metric'])
    lines.setdefault(key, {'method': row['method'], 'reference': row.get('reference')})[row['nfe']] = row['value']
  header = ['method', 'step', 'params', 'sampler', 'metric'] + [f'NFE {nfe}' for nfe in nfes] + ['reference']
  text = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for (step, params, sampler, metric), values in sorted(lines.items()):
    cells = [values['method'], str(step), params, sampler, metric]
    cells += [f'{values[nfe]:.5g}' if nfe in values else '' for nfe in nfes]
    cells.append('' if values['reference'] is None else f'{values["reference"]:.5g}')
    text.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(text) + '\n'


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


def sampler_name(config, solver: str | None = None) -> str:
  """The sampling options a row's numbers depend on besides the NFE: the solver and the guidance scale."""
  hp = config.method
  parts = [solver or hp.get('solver', 'default')]
  if hp.get('guidance', 1.0) != 1.0:
    parts.append(f'guidance {hp.guidance:g}')
  if config.eval.get('grid_file'):
    parts.append(f'grids {os.path.basename(config.eval.grid_file)}')
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
  params = run.sampling_params(state)
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
    if not is_points and samples.shape[-1] not in (1, 3):
      # Latents without data.vae: stored as arrays for an external decoder.
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
