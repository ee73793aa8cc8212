r"""Generates teacher ODE pairs (eps, x̂) from a trained flow, once, as a dataset (data/ode_pairs.py): the couplings
reflow trains on and the regression pairs of DMD.

  python -m fewstep_jax.tools.generate_pairs --teacher=runs/quickstart --out=runs/pairs_digits --num=20000 \
      [--nfe=50] [--solver=heun] [--guidance=1.5] [--batch=500] [--seed=0]   (solver, guidance: the teacher's)

Each pair is (eps, x̂): eps ~ N(0, I) and x̂ the teacher's deterministic ODE sample from eps with `nfe` network
calls, by the teacher's own sampler (flow matching: from z_1 = eps; EDM: from sigma_max eps on the Karras grid,
as 2-RF++ does with its EDM teacher), guided with `guidance` for class-conditional teachers (labels uniform
over the classes). Train 2-RF / 2-RF++ on the pairs with configs/*/reflow.py.
"""
import os

from absl import app, flags, logging
import jax
import numpy as np

from fewstep_jax import runs, sampling
from fewstep_jax.data import ode_pairs
from fewstep_jax.train.writers import progress, say

PAIR_TEACHERS = ('flow_matching', 'edm', 'consistency_fm', 'reflow')

flags.DEFINE_string('teacher', None, 'Workdir of the trained flow.')
flags.DEFINE_string('out', None, 'Directory to write the pairs to (must not exist).')
flags.DEFINE_integer('num', None, 'Number of pairs.')
flags.DEFINE_integer('nfe', 50, 'Network calls per sample (guided drift evaluations cost two).')
flags.DEFINE_enum('solver', None, sorted(sampling.SOLVERS), "ODE solver (default: the teacher's).")
flags.DEFINE_float('guidance', None, "CFG scale (default: the teacher's config).")
flags.DEFINE_integer('batch', 500, 'Samples per compiled call.')
flags.DEFINE_integer('seed', 0, 'Seed of the noise and labels.')
flags.mark_flags_as_required(['teacher', 'out', 'num'])
FLAGS = flags.FLAGS


def generate_pairs(teacher_workdir: str, out_dir: str, num: int, *, nfe=50, solver=None, guidance=None,
                   batch=500, seed=0):
  """Runs the teacher's own sampler from num noise draws and writes the pairs to out_dir. Returns the info.

  solver / guidance: the teacher's sampling options (None: its config's). Labels are uniform over the classes.
  """
  if os.path.exists(out_dir):
    raise FileExistsError(f'{out_dir} exists; pairs are written once: remove it or choose another --out')
  opened = runs.open_run(teacher_workdir)
  method, params, step = opened.method, opened.params[opened.config.eval.params], opened.step
  if method.name not in PAIR_TEACHERS:
    raise ValueError(f'teacher method {method.name!r} has no deterministic ODE sampler; reflow needs an ODE '
                     f'teacher ({", ".join(PAIR_TEACHERS)})')
  options = {name: value for name, value in (('solver', solver), ('guidance', guidance)) if value is not None}
  conditional = method.num_classes > 0

  @jax.jit
  def solve(key):
    noise_key, label_key, sample_key = jax.random.split(key, 3)
    eps = jax.random.normal(noise_key, (batch,) + tuple(method.data_shape))
    labels = jax.random.randint(label_key, (batch,), 0, method.num_classes) if conditional else None
    return eps, method.sample_at(params, sample_key, batch, nfe, labels, noise=eps, **options), labels

  parts = []
  batches = -(-num // batch)
  print(f'generating {num} pairs with {method.name} at {nfe} NFE, {batches} batches of {batch} (the first one '
        'compiles)', flush=True)
  for index in progress(range(batches), desc='pairs', unit='batch'):
    eps, x, labels = jax.device_get(solve(jax.random.fold_in(jax.random.PRNGKey(seed), index)))
    if not np.all(np.isfinite(x)):
      raise FloatingPointError(f'the teacher produced non-finite samples in batch {index}; check the teacher')
    parts.append((eps, x, labels))
    if (index + 1) % max(batches // 10, 1) == 0 or index + 1 == batches:
      say(f'pairs: {min((index + 1) * batch, num)} / {num}')
  stack = lambda i: None if parts[0][i] is None else np.concatenate([p[i] for p in parts])[:num]
  info = {'teacher': os.path.abspath(teacher_workdir), 'teacher_step': int(step), 'teacher_method': method.name,
          'nfe': nfe, 'sampling_options': options, 'seed': seed,
          'data_shape': list(method.data_shape), 'num_classes': int(method.num_classes),
          'source_data': method.config.data.to_dict()}
  ode_pairs.write_pairs(out_dir, stack(0), stack(1), stack(2), info)
  return ode_pairs.read_info(out_dir)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO.
  info = generate_pairs(FLAGS.teacher, FLAGS.out, FLAGS.num, nfe=FLAGS.nfe, solver=FLAGS.solver,
                        guidance=FLAGS.guidance, batch=FLAGS.batch, seed=FLAGS.seed)
  print(f"wrote {info['count']} pairs to {FLAGS.out}", flush=True)


if __name__ == '__main__':
  app.run(main)
