r"""Few-step sampler grids for an ODE sampler (an edm or flow_matching run), searched against the embedded metric and
stored.

  python -m fewstep_jax.tools.search_sampler_grids --teacher=runs/toy_edm --nfe=3,5 --out=runs/toy_edm/grids.json \
      [--solver=heun] [--evals=150] [--num_samples=2000] [--seed=0]
  python -m fewstep_jax.main --mode=eval --workdir=runs/toy_edm --config.eval.nfe='(3, 5)' \
      --config.eval.grid_file=runs/toy_edm/grids.json

A K-step grid is the solver's: for an EDM teacher the descending sigmas sigma_max = s_0 > ... > s_{K-1} = sigma_min,
then 0; for a flow-matching teacher the times 1 = t_0 > ... > t_K = 0. Its interior points move, written as
fractions of the way along the teacher's default map (EDM: the Karras rho-map, where equal fractions are the Karras
grid; flow: time itself, where equal fractions are the uniform grid), with the increments a softmax of free logits,
so every candidate is a valid decreasing grid. The search is a derivative-free coordinate search on those logits (the
kind BOSS / AutoDiffusion run over step sizes; Align Your Steps optimises a bound instead, which needs the teacher's
training data at every level) scored by the embedded metric (toy: sliced W2; digits: the Fréchet distance in the
shipped classifier's features) on a fixed noise draw, so that a candidate's score is deterministic. Each grid is
then scored with fresh noise and a fresh reference set (`heldout_*`), against the default grid, so that a grid
fitted to its search draw shows as such.

The stored file (JSON): {'teacher', 'method', 'solver', 'metric', 'grids': {nfe: {'grid', 'search_value',
'default_search_value', 'heldout_value', 'default_heldout_value'}}}. `sampler_grids.grid_for(path, ...)` reads it
for the sampler (`eval.grid_file`).
"""
import os
import types

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from fewstep_jax import runs, sampling
from fewstep_jax import data as data_lib
from fewstep_jax.eval.evaluate import EVALUATORS
from fewstep_jax.sampler_grids import grid_size, logit_grid
from fewstep_jax.train import files
from fewstep_jax.train.writers import say


class Scorer:
  """The embedded metric of samples drawn with a given grid from one fixed noise draw (common random numbers)."""

  def __init__(self, opened, params, nfe: int, solver: str, num_samples: int, seed: int):
    config = opened.config
    data = data_lib.build_data(config.data, global_batch_size=config.train.batch_size, seed=config.train.seed)
    if data.evaluator not in EVALUATORS:
      raise ValueError(f'no embedded evaluator for data.name={config.data.name!r}; grids are searched on '
                       f'{sorted(EVALUATORS)}')
    self.evaluator = EVALUATORS[data.evaluator](types.SimpleNamespace(data=data), num_samples, seed)
    method = opened.method
    self.labels = method.conditioning.for_samples(np.arange(num_samples, dtype=np.int32))
    key = jax.random.PRNGKey(seed)
    conditional = self.labels is not None
    self.sample = jax.jit(lambda grid: method.sample(
        params, key, num_samples, method.sampling_plan(nfe, conditional, solver=solver, grid=grid), self.labels))

  def __call__(self, grid) -> float:
    samples = np.asarray(jax.device_get(self.sample(jnp.asarray(grid, jnp.float32))))
    labels = None if self.labels is None else np.asarray(self.labels)
    self.metric, value, _ = self.evaluator.rows(samples, labels)[0]
    return float(value)


def search(score, size: int, evals: int, step: float = 1.0):
  """(best logits [size], best score, evaluations): coordinate search from zeros, each coordinate moved by +-step
  while that helps, step shrunk by 0.6 after a round without improvement, until `evals` scores."""
  best = np.zeros(size)
  best_score, used = score(best), 1
  while used < evals and size and step > 1e-3:
    improved = False
    for i in range(size):
      for sign in (1.0, -1.0):
        if used >= evals:
          break
        trial = best.copy()
        trial[i] += sign * step
        value, used = score(trial), used + 1
        if value < best_score:
          best, best_score, improved = trial, value, True
          break
    if not improved:
      step *= 0.6
  return best, best_score, used


def search_grids(teacher: str, nfes, out: str, *, solver=None, evals=150, num_samples=2000, seed=0) -> dict:
  """Searches a grid for each NFE of `nfes` for the teacher run and writes them to `out`. Returns the file's
  content."""
  if os.path.exists(out):
    raise FileExistsError(f'{out} exists; remove it or choose another --out')
  opened = runs.open_run(teacher)
  method = opened.method
  solver = solver or method.hparams.solver
  params = opened.params[opened.config.eval.params]
  result = {'teacher': os.path.abspath(teacher), 'method': method.name, 'solver': solver, 'grids': {}}
  for nfe in nfes:
    default = logit_grid(method, solver, nfe)
    scorer = Scorer(opened, params, nfe, solver, num_samples, seed)
    heldout = Scorer(opened, params, nfe, solver, num_samples, seed + 1000)
    logits, value, used = search(lambda logits: scorer(logit_grid(method, solver, nfe, logits)),
                                 grid_size(method, solver, nfe), evals)
    grid = logit_grid(method, solver, nfe, logits)
    entry = {'grid': [float(v) for v in grid], 'search_value': value, 'default_search_value': scorer(default),
             'heldout_value': heldout(grid), 'default_heldout_value': heldout(default), 'evaluations': used}
    result['grids'][str(nfe)] = entry
    result['metric'] = scorer.metric
    say(f'nfe {nfe}: {scorer.metric} {entry["heldout_value"]:.5g} on held-out noise (default grid '
        f'{entry["default_heldout_value"]:.5g}); search draw {value:.5g} (default {entry["default_search_value"]:.5g}) '
        f'after {used} evaluations; grid {np.round(grid, 4).tolist()}')
  files.write_json(out, result)
  print(f'sampler grids: {out}', flush=True)
  return result


def main(argv):
  del argv
  flag_values = flags.FLAGS
  search_grids(flag_values.teacher, [int(n) for n in flag_values.nfe], flag_values.out, solver=flag_values.solver,
                 evals=flag_values.evals, num_samples=flag_values.num_samples, seed=flag_values.seed)


def define_flags():
  """The command line's flags, defined only when this module runs as a program (another module's flags of the
  same names, e.g. the pairs tool's --teacher, may share the process)."""
  flags.DEFINE_string('teacher', None, 'Workdir of the trained ODE teacher (edm or flow_matching).')
  flags.DEFINE_list('nfe', None, 'Network-call budgets to make grids for, e.g. 3,5,7.')
  flags.DEFINE_string('out', None, 'The grid file to write (must not exist).')
  flags.DEFINE_enum('solver', None, sorted(sampling.SOLVERS), "ODE solver (default: the teacher's).")
  flags.DEFINE_integer('evals', 150, 'Metric evaluations per grid.')
  flags.DEFINE_integer('num_samples', 2000, 'Samples per evaluation.')
  flags.DEFINE_integer('seed', 0, 'Seed of the search draw (the held-out draw uses seed + 1000).')
  flags.mark_flags_as_required(['teacher', 'nfe', 'out'])


if __name__ == '__main__':
  define_flags()
  app.run(main)
