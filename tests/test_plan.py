"""experiments/plan.py: every paper-row config's training step traces at full size, at its paper batch, on the
planner's data shapes and abstract teachers (jax.eval_shape, no compile); and a tiny compiled plan whose state split
is the state's real size."""
import importlib.util
import sys

import jax
import pytest

from conftest import REPO, described_teachers, error_line, run_main
from fewstep_jax.config_base import load_config
from fewstep_jax.methods import build_method

sys.path.insert(0, str(REPO / 'experiments'))
_spec = importlib.util.spec_from_file_location('plan_experiment', REPO / 'experiments/plan.py')
plan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plan)
_rows_spec = importlib.util.spec_from_file_location('paper_tables_rows', REPO / 'experiments/paper_tables/table.py')
_rows = importlib.util.module_from_spec(_rows_spec)
_rows_spec.loader.exec_module(_rows)
PAPER_CONFIGS = sorted({row['config'] for row in _rows.ROWS})

# Traced by default (the default run's time is tight): diffusion on CIFAR-10's U-Net, the cheapest to trace (5 to 8
# s). The rest are marked slow, sCM and reflow on the same U-Net among them (`pytest -m slow`): consistency from a start, score
# distillation and MeanFlow on DiT-XL/2 (10 to 26 s each), ImageNet-64's cm_unet and edm2_unet, CTM (its teacher's
# Heun steps: 3.5 minutes to trace on 2 cores) and DMD2 with its GAN head (8 minutes on a loaded machine).
REPRESENTATIVE = {'configs/cifar10/edm.py'}


def _marked(path):
  return path if path in REPRESENTATIVE else pytest.param(path, marks=pytest.mark.slow)


def test_the_representatives_are_paper_rows():
  assert REPRESENTATIVE <= set(PAPER_CONFIGS)


@pytest.mark.parametrize('path', [_marked(path) for path in PAPER_CONFIGS], ids=lambda path: path[len('configs/'):])
def test_paper_row_step_traces_at_full_size(path):
  """Every kind of step the row's schedule runs traces at the paper batch with the planner's data shapes and
  abstract inputs, and keeps the state's shapes; teachers, pairs and LPIPS weights are frozen state."""
  config = load_config(str(REPO / path))
  run = plan.planned_run(config, 1)
  state, batch = plan.abstract_state(run), plan.abstract_batch(run)
  assert batch['x'].shape[0] == config.train.batch_size
  kinds = plan.step_kinds(run.method, config.train.num_steps)
  assert sum(steps for _, _, steps in kinds) == config.train.num_steps
  for _, options, _ in kinds:
    plan.trace_kind(run, state, batch, options)
  split = plan.state_split(state)
  assert split['params'] > 0 and split['opt_state'] > 0
  inputs = plan.methods.method_class(config.method.name).inputs(config).values()
  kept = [spec for spec in inputs if not isinstance(spec, plan.InitInput)]  # A start becomes the student's params.
  assert (split['frozen'] > 0) == bool(kept)


@pytest.mark.slow
@pytest.mark.parametrize('path', PAPER_CONFIGS, ids=lambda path: path[len('configs/'):])
def test_paper_row_step_compiles_at_full_size(path):
  """Every kind of step the row's schedule runs compiles at full size and at the paper's per-device batch, on one
  device standing for the paper's count (the same per-device program, without its collectives); the compiled
  arguments are the state and the batch to the byte. cifar10/edm takes 38 s on this 2-core CPU at the tests' XLA
  level; the whole list takes hours (docs/plan.md gives the ImageNet rows' times)."""
  batch = load_config(str(REPO / path)).train.batch_size
  config = load_config(str(REPO / path), {'train.batch_size': batch // plan.row_devices(batch)})
  result = plan.plan_run(plan.planned_run(config, 1))
  for kind in result['kinds']:
    assert kind['argument'] == result['state_bytes']['total'] + result['batch_bytes']
    assert kind['flops'] > 0 and kind['temp'] > 0


def test_step_kinds_follow_the_schedule():
  """DMD2's two time-scale rule (student every 5th step): a critic-and-student kind for 1 step in 5, a critic-only
  kind for the rest; a one-network method has one kind for every step."""
  def method(name):
    config = load_config(str(REPO / f'configs/digits/{name}.py'))
    return build_method(config, data_shape=(8, 8, 1), num_classes=10,
                        inputs=described_teachers(config, (8, 8, 1), 10))
  dmd2 = method('dmd2')
  kinds = {name: (options, steps) for name, options, steps in plan.step_kinds(dmd2, 12)}
  assert sorted(steps for _, steps in kinds.values()) == [3, 9] and kinds['critic'][1] == 9
  assert kinds['critic'][0] == dmd2.step_options(1) != dmd2.step_options(0)
  assert [(name, steps) for name, _, steps in plan.step_kinds(method('edm'), 7)] == [('every step', 7)]


TINY_DIGITS_EDM = {'network.channels': 8, 'network.channel_mult': (1,), 'network.attn_resolutions': (),
                   'train.batch_size': 8, 'optim.ema_rates': (0.999,)}


def test_tiny_compiled_plan_splits_the_real_state():
  """The split (params / opt_state / ema / frozen / other) sums to the bytes of the state init_state makes, and
  the compiled step's argument bytes are that state plus the batch. With the EMA copy offloaded, its bytes are in
  host memory, the parameters cross the host link each step, and the device's peak is lower by the EMA copy."""
  config = load_config(str(REPO / 'configs/digits/edm.py'), TINY_DIGITS_EDM)
  run = plan.planned_run(config, 1)
  result = plan.plan_run(run)
  real_state = run.init_state()
  real_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(real_state))
  split = result['state_bytes']
  assert sum(value for name, value in split.items() if name != 'total') == split['total'] == real_bytes
  assert split['ema'] == split['params'] and split['opt_state'] >= 2 * split['params']  # Adam's two moments.
  [kind] = result['kinds']
  assert kind['argument'] == real_bytes + result['batch_bytes']
  assert kind['flops'] > 0 and kind['temp'] > 0 and kind['peak'] >= kind['argument']
  projected = plan.projection(result, plan.HARDWARE['h100'], 0.5)
  assert projected['step_s'] == pytest.approx(kind['flops'] / (989e12 * 0.5))
  assert projected['fits']

  offloaded = plan.plan_run(plan.planned_run(load_config(str(REPO / 'configs/digits/edm.py'),
                                                         {**TINY_DIGITS_EDM, 'mesh.offload': 'ema'}), 1))
  assert offloaded['host_bytes'] == split['ema'] == offloaded['host_link_bytes_per_step'] == split['params']
  assert offloaded['kinds'][0]['peak'] == kind['peak'] - split['ema']


def _row(path, peak_gb, compiled=True, ema_gb=0.0):
  gb = plan.GB
  state = {'params': 10 * gb, 'opt_state': 20 * gb, 'ema': ema_gb * gb, 'frozen': 0, 'other': 0}
  kinds = [{'peak': peak_gb * gb, 'temp': peak_gb * gb / 2, 'flops': 1e15, 'steps': 10}] if compiled else [{'steps': 10}]
  row = {'path': path, 'devices': 8, 'mesh': {'data': 8, 'fsdp': 1}, 'global_batch': 64, 'num_steps': 10,
         'state_bytes': {**state, 'total': sum(state.values())}, 'kinds': kinds}
  return {**row, 'projection': plan.projection(row, plan.HARDWARE['h100'], 0.4)}


def test_the_readme_summary_counts_what_fits_and_says_how_the_rest_would():
  rows = [_row('configs/a.py', 30), _row('configs/b.py', 90, ema_gb=20), _row('configs/c.py', 0, compiled=False),
          {'path': 'configs/d.py', 'devices': 8, 'error': 'failed'}]
  text = ' '.join(plan.summary(rows, plan.HARDWARE['h100'], 0.4, 'docs/plan.md').split())
  assert '2 of 4 paper-row configs fit 80 GB per device' in text
  assert '2 of them were compiled at full size' in text and 'the other 1 is judged by the training state' in text
  assert '1 could not be planned' in text
  assert '`configs/b.py` (peak 90 GB: mesh.fsdp=8' in text and 'mesh.offload=ema (20.0 GB' in text
  assert 'the compiled rows cost from 0 (`configs/a.py`) to 0 (`configs/b.py`) H100-hours each' in text


def test_bad_hardware_is_one_line():
  result = run_main(['--config=configs/toy/edm.py', '--hardware=b200', '--trace_only'], module='experiments.plan',
                    check=False)
  assert 'b200' in error_line(result) and 'h100' in error_line(result)
