"""EDM2's post-hoc EMA: a run's parameters averaged with any power-function profile, after training, from the
power-function EMA copies (`optim.ema_stds`) its checkpoints hold.

  python -m fewstep_jax.tools.posthoc_ema --workdir=runs/imagenet64_ect --std=0.075 --out=runs/imagenet64_ect_phema0.075
      [--step=N]   # the profile's end (default: the newest checkpoint); snapshots after it are not used

EDM2 (Karras et al. 2024, section 3 and appendix C.3; its `training/phema.py` and `reconstruct_phema.py`) tracks,
for each width sigma_rel, the average of the parameters weighted by p(t) ∝ t^gamma on [0, T] (the copies
`phema_<std>`, `train/state.py`). A profile of another width, or ending earlier, is approximated by the
combination of the stored snapshots (every copy of every checkpoint up to --step) whose profile is closest to it in
L2: the normal equations A x = b with A the snapshots' profiles' inner products and b their inner products with the
target, the coefficients then scaled to sum to 1 (EDM2's Algorithm 3). More snapshots (a smaller
train.checkpoint_every with a larger train.max_to_keep) approximate better. The inner product of two power
profiles is closed-form (`profile_inner_product`), here in logarithms so that long runs stay finite.

The output is a run directory like the source (its config, method and readout, with eval.params = 'params')
whose checkpoint holds the reconstruction as the student's parameters; it opens as a teacher, as a start
(method.init_from) and in --mode=eval / --mode=sample. Its config.json records the width, the end step and the
coefficients.

Deviation: EDM2 measures time in training images; here in optimizer steps, which is the same profile at a fixed
batch size (the coefficients do not depend on the unit). Step 0 (the initial parameters) is not a snapshot.
"""
import json
import os

from absl import app, flags, logging
import jax
import numpy as np

from fewstep_jax import runs
from fewstep_jax.train import files
from fewstep_jax.train import state as state_lib
from fewstep_jax.train.checkpoint import Checkpointer, committed_steps


def profile_inner_product(end_a, std_a, end_b, std_b):
  """<p_a, p_b> for power-function profiles p(t) = (gamma + 1) t^gamma / T^(gamma + 1) on [0, T] (T = end > 0,
  gamma from the width std): (ga + 1)(gb + 1) min(Ta, Tb)^(ga + gb + 1) / ((ga + gb + 1) Ta^(ga + 1) Tb^(gb + 1)).
  Arrays broadcast."""
  ga = np.vectorize(state_lib.power_ema_exponent)(np.asarray(std_a, np.float64))
  gb = np.vectorize(state_lib.power_ema_exponent)(np.asarray(std_b, np.float64))
  end_a, end_b = np.asarray(end_a, np.float64), np.asarray(end_b, np.float64)
  log = ((ga + gb + 1) * np.log(np.minimum(end_a, end_b)) - (ga + 1) * np.log(end_a) - (gb + 1) * np.log(end_b))
  return (ga + 1) * (gb + 1) / (ga + gb + 1) * np.exp(log)


def coefficients(ends, stds, end, std):
  """The weights [n] of snapshots (ends [n], stds [n]) that best approximate the profile (end, std), summing to 1."""
  ends, stds = np.asarray(ends, np.float64), np.asarray(stds, np.float64)
  gram = profile_inner_product(ends[:, None], stds[:, None], ends[None, :], stds[None, :])
  target = profile_inner_product(ends, stds, end, std)
  x = np.linalg.lstsq(gram, target, rcond=None)[0]  # lstsq: snapshots at equal (end, std) make A singular.
  return x / np.sum(x)


def snapshots(workdir: str, config, end: int):
  """[(step, copy name, std)] of every power-function copy in the committed checkpoints at steps 1..end."""
  stds = tuple(config.optim.get('ema_stds', ()))
  if not stds:
    raise ValueError(f'{workdir} tracks no power-function EMA (optim.ema_stds is empty): post-hoc EMA needs one; '
                     'train with e.g. --config.optim.ema_stds="(0.05, 0.1)".')
  steps = [step for step in committed_steps(os.path.join(workdir, 'checkpoints')) if 1 <= step <= end]
  if not steps:
    raise FileNotFoundError(f'{workdir} has no checkpoint at steps 1..{end}')
  return [(step, state_lib.power_ema_name(std), std) for step in steps for std in stds]


def reconstruct(workdir: str, std: float, step: int | None = None, log=print):
  """(end step, [(step, copy, weight)], parameters): the run's parameters under the profile of width `std`
  ending at `step` (default: its newest checkpoint), accumulated one checkpoint at a time in float64."""
  config, info = runs.read_run_info(workdir)
  if info.get('lora'):
    raise ValueError(f'{workdir} trained LoRA factors (lora.rank={info["lora"]["rank"]}): a post-hoc profile combines '
                     'parameter copies linearly, which the merged weights W + B A are not in the factors; use its '
                     'EMA copies as they are')
  newest = committed_steps(os.path.join(workdir, 'checkpoints'))
  end = int(step if step is not None else (newest[-1] if newest else 0))
  found = snapshots(workdir, config, end)
  weights = coefficients([s for s, _, _ in found], [d for _, _, d in found], end, std)
  total = None
  for checkpoint_step in sorted({s for s, _, _ in found}):
    names = [name for s, name, _ in found if s == checkpoint_step]
    _, copies = runs.restore_parameters(workdir, info, names, step=checkpoint_step,
                                        max_to_keep=config.train.max_to_keep, log=lambda message: None)
    for name in names:
      weight = weights[[i for i, (s, n, _) in enumerate(found) if (s, n) == (checkpoint_step, name)][0]]
      term = jax.tree.map(lambda p, w=weight: w * np.asarray(p, np.float64), copies[name])
      total = term if total is None else jax.tree.map(np.add, total, term)
  log(f'{workdir}: sigma_rel {std} at step {end} from {len(found)} snapshots '
      f'(weights {np.min(weights):+.3f} .. {np.max(weights):+.3f})')
  params = jax.tree.map(lambda p: p.astype(np.float32), total)
  return end, [(s, n, float(w)) for (s, n, _), w in zip(found, weights)], params


def check_out(out: str):
  """A clear error if `out` already holds a run (nothing is overwritten)."""
  if os.path.exists(os.path.join(out, runs.RUN_INFO)) or os.path.isdir(os.path.join(out, 'checkpoints')):
    raise FileExistsError(f'{out} already holds a run; choose another --out or remove it')


def write_run(out: str, workdir: str, std: float, end: int, used, params):
  """The reconstruction as a run directory: the source's config (eval.params = 'params') and run info, one
  checkpoint at `end` holding the student's parameters. Refuses a directory that holds a run."""
  check_out(out)
  config, info = runs.read_run_info(workdir)
  config_json = json.loads(json.dumps(config.to_dict()))
  config_json['eval']['params'] = 'params'
  config_json['train']['max_to_keep'] = 1
  config_json['posthoc_ema'] = {'source': os.path.abspath(workdir), 'std': std, 'step': end,
                                'snapshots': [{'step': s, 'copy': n, 'weight': w} for s, n, w in used]}
  os.makedirs(out, exist_ok=True)
  checkpointer = Checkpointer(os.path.join(out, 'checkpoints'), max_to_keep=1)
  try:
    checkpointer.save(end, {'nets': {'student': {'params': params}}}, {}, [], config_json, force=True)
    checkpointer.wait()
  finally:
    checkpointer.close()
  files.write_json(os.path.join(out, 'config.json'), config_json)
  info = dict(info, parameters={'params': runs.parameter_structure(params), 'ema': {}})
  files.write_json(os.path.join(out, runs.RUN_INFO), info, indent=None)


FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax's per-file INFO lines.
  check_out(FLAGS.out)  # Before the reconstruction, which reads every checkpoint.
  end, used, params = reconstruct(FLAGS.workdir, FLAGS.std, FLAGS.step)
  write_run(FLAGS.out, FLAGS.workdir, FLAGS.std, end, used, params)
  print(f'-> {FLAGS.out}')


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'A trained run with power-function EMA copies (optim.ema_stds).')
  flags.DEFINE_float('std', None, 'The relative width sigma_rel of the profile to reconstruct (EDM2: 0.05-0.2).')
  flags.DEFINE_integer('step', None, "The profile's end step (default: the newest checkpoint).")
  flags.DEFINE_string('out', None, 'The run directory to write.')
  flags.mark_flags_as_required(['workdir', 'std', 'out'])
  app.run(main)
