r"""A 2-D toy example in one command, in the spirit of EDM2's toy_example.py: one method trained on a 2-D
distribution, then pictures of what it learnt: its sampling trajectories from fixed noise, and its samples at 1, 2
and 4 NFE beside the data.

  python experiments/toy_example.py --method=sct [--steps=3000] [--data=8gaussians|moons|checkerboard|spirals]
                                    [--out_dir=runs/toy_example]

--method is a config of configs/toy/ (sct, meanflow, shortcut, ict, ect, cd, dmd2, ..., or the flow_matching / edm
teachers). The runs it reads (a teacher, a run to start from) come from its declared inputs, as in
experiments/compare.py, and train first at the same step count on the same distribution, into --out_dir; a run
already there is reused (or resumed). The picture, <out_dir>/<method>_<data>.png, has five panels:
  data           --num points of the distribution
  trajectories   --paths fixed noise draws through every intermediate state of the method's own sampler at
                 --trajectory_nfe (default 4; 32 for an ODE teacher): the flow map's jumps, the ODE's path, or a
                 consistency sampler's data predictions (each re-noised before the next call)
  1, 2, 4 NFE    --num samples at each NFE, the same noise in each panel
and the run's sliced W2 at each NFE is in the panel titles (the floor, two true samples, in the first).
"""
import os
import sys

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (experiments/compare.py: the configs' dependency graph)

FLAGS = flags.FLAGS

NFES = (1, 2, 4)


def train_with_inputs(name: str, steps: int, data: str, out_dir: str):
  """Trains configs/toy/<name>.py after every run it reads (each once, into out_dir/<run>); returns its Trained."""
  from fewstep_jax import api, config_base
  nodes = compare.build_graph('toy', [name])
  trained = None
  for node_name in compare.topological_order(nodes):
    node = nodes[node_name]
    if node.kind == 'pairs':
      raise app.UsageError(f'--method={name} trains on teacher ODE pairs, which this example does not write: '
                           f'python experiments/compare.py --datasets=toy --methods={name}')
    overrides = {**compare.budget_overrides(steps), 'data.toy': data,
                 **{field: os.path.join(out_dir, source) for field, source in node.needs.items()}}
    print(f'training {node_name} ({steps} steps on {data})', flush=True)
    config = config_base.load_config(node.config, overrides)
    compare.fit_ema(config, steps)  # A short --steps would otherwise evaluate an EMA still mostly at its start.
    trained = api.train(config, os.path.join(out_dir, node_name))
  return trained


def trajectories(trained, nfe: int, n: int, seed: int = 0):
  """[n, states, 2]: the states of the method's own `nfe`-call sampler from n fixed noise draws, by running its
  compiled sampler with the plan cut after 0 (the noise, for an ODE-style plan), 1, 2, ... steps."""
  import dataclasses
  import jax
  import numpy as np
  method, params = trained.method, trained.params()
  plan = method.sampling_plan(nfe, False)
  steps_field = 'num_steps' if hasattr(plan.steps, 'num_steps') else 'count'
  total = int(getattr(plan.steps, steps_field))
  sample = jax.jit(lambda params, key, plan: method.sample(params, key, n, plan))
  key = jax.random.PRNGKey(seed)
  states = []
  for taken in range(0 if steps_field == 'num_steps' else 1, total + 1):
    cut = dataclasses.replace(plan, steps=plan.steps._replace(**{steps_field: np.int32(taken)}))
    states.append(np.asarray(sample(params, key, cut)))
  return np.stack(states, axis=1)


def draw(path: str, data_points, paths, samples: dict, w2: dict, floor: float, title: str):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  low, high = data_points.min(0), data_points.max(0)
  margin = 0.25 * (high - low)
  fig, axes = plt.subplots(1, 2 + len(samples), figsize=(4 * (2 + len(samples)), 4.2), sharex=True, sharey=True)
  axes[0].scatter(data_points[:, 0], data_points[:, 1], s=1.5, color='0.35')
  axes[0].set_title(f'data (sliced W2 floor {floor:.3g})')
  if paths is None:
    axes[1].text(0.5, 0.5, 'no multistep sampler', ha='center', transform=axes[1].transAxes)
  else:
    axes[1].scatter(data_points[:, 0], data_points[:, 1], s=1, color='0.85')
    for track in paths:
      axes[1].plot(track[:, 0], track[:, 1], color='C0', linewidth=0.5, alpha=0.6)
    axes[1].scatter(paths[:, -1, 0], paths[:, -1, 1], s=4, color='C3', zorder=3)
    axes[1].set_title(f'trajectories ({paths.shape[1]} states each)')
  for ax, (nfe, points) in zip(axes[2:], samples.items()):
    ax.scatter(points[:, 0], points[:, 1], s=1.5, color='C1')
    ax.set_title(f'{nfe} NFE (sliced W2 {w2[nfe]:.3g})')
  for ax in axes:
    ax.set_xlim(low[0] - margin[0], high[0] + margin[0])
    ax.set_ylim(low[1] - margin[1], high[1] + margin[1])
    ax.set_aspect('equal')
  fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO, the bulk of the output.
  if FLAGS.method not in compare.config_names('toy'):
    raise app.UsageError(f'--method: no configs/toy/{FLAGS.method}.py; known: {", ".join(compare.config_names("toy"))}')
  from fewstep_jax import api
  trained = train_with_inputs(FLAGS.method, FLAGS.steps, FLAGS.data, FLAGS.out_dir)
  teacher = compare.is_teacher(trained.config)
  nfe = FLAGS.trajectory_nfe or (32 if teacher else 4)
  paths = trajectories(trained, nfe, FLAGS.paths)
  data_points, _ = api.data_samples(trained, FLAGS.num)
  samples = {n: api.sample(trained, nfe=n, n=FLAGS.num)[0] for n in NFES}
  rows = api.evaluate(trained, nfe=NFES, num_samples=FLAGS.num, params=trained.config.eval.params)
  w2 = {row['nfe']: row['value'] for row in rows if row['metric'] == 'sliced_w2'}
  floor = next(row['reference'] for row in rows if row['metric'] == 'sliced_w2')
  path = os.path.join(FLAGS.out_dir, f'{FLAGS.method}_{FLAGS.data}.png')
  draw(path, data_points, paths, samples, w2, floor,
       f'{FLAGS.method} ({trained.config.method.name}) on {FLAGS.data}, {FLAGS.steps} steps; trajectories at {nfe} NFE')
  print(api.results_table(rows))
  print(f'wrote {path}', flush=True)


def define_flags():
  """The command line's flags (defined only when run, so that tests can import this file)."""
  flags.DEFINE_string('method', 'sct', 'A config name of configs/toy/.')
  flags.DEFINE_integer('steps', 3000, 'Training steps of the method and of every run it reads.')
  flags.DEFINE_enum('data', '8gaussians', ['8gaussians', 'moons', 'checkerboard', 'spirals'], '2-D distribution.')
  flags.DEFINE_string('out_dir', 'runs/toy_example', 'Where the runs and the picture go.')
  flags.DEFINE_integer('num', 2000, 'Points per sample panel.')
  flags.DEFINE_integer('paths', 200, 'Trajectories drawn.')
  flags.DEFINE_integer('trajectory_nfe', 0, 'NFE of the drawn trajectories (0: 4, or 32 for an ODE teacher).')


if __name__ == '__main__':
  define_flags()
  app.run(main)
