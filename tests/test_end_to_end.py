"""Whole runs through the command line: the workdir contract, and (slow) the quality the configs reach."""
import json
import os

import pytest

from conftest import REPO, run_main

TOY = str(REPO / 'configs/toy/flow_matching.py')
DIGITS = str(REPO / 'configs/digits/flow_matching.py')

TOY_METRICS = ('sliced_w2', 'mmd_rbf', 'off_support', 'parts_covered')


def read_results(workdir):
  """(nfe, metric) -> row of the configured parameters (eval.params): after a short run an EMA copy's rows come
  with rows of the raw parameters too."""
  with open(os.path.join(workdir, 'eval', 'results.json')) as f:
    rows = sorted(json.load(f), key=lambda row: row['params'] != 'params')  # The configured copy last, kept.
  return {(row['nfe'], row['metric']): row for row in rows}


def test_workdir_contract_train_eval_sample(tmp_path):
  workdir = str(tmp_path / 'run')
  args = ['--config=' + TOY, '--workdir=' + workdir, '--config.network.hidden=32', '--config.network.depth=1',
          '--config.train.num_steps=30', '--config.train.log_every=10', '--config.train.checkpoint_every=15',
          '--config.eval.num_samples=200', '--config.eval.sample_grid=4']
  run_main(args + ['--config.eval.nfe=(1,4)'])
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['15', '30']
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['train']['num_steps'] == 30
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  assert [row['step'] for row in rows] == [10, 20, 30]
  assert all({'loss', 'grad_norm'} <= set(row) for row in rows)
  assert sorted(os.listdir(os.path.join(workdir, 'samples'))) == ['step_0000030_nfe1_euler.png',
                                                                   'step_0000030_nfe4_euler.png']
  assert all('lr' in row for row in rows)
  results = read_results(workdir)
  assert set(results) == {(nfe, metric) for nfe in (1, 4) for metric in TOY_METRICS}
  for row in results.values():
    assert {'method', 'nfe', 'metric', 'value', 'reference'} <= set(row)
    assert row['method'] == 'flow_matching'
  # A 30-step model is far from the data; the floor (true vs true) is far below it.
  assert results[4, 'sliced_w2']['value'] > 3 * results[4, 'sliced_w2']['reference']

  os.remove(os.path.join(workdir, 'eval', 'results.json'))
  run_main(args + ['--mode=eval', '--config.eval.nfe=(2,)'])  # The training command's overrides change nothing.
  assert set(read_results(workdir)) == {(2, metric) for metric in TOY_METRICS}
  run_main(args + ['--mode=sample', '--config.eval.nfe=(3,)'])
  said = run_main(args + ['--mode=sample', '--config.eval.nfe=(3,)']).stdout
  assert {'step_0000030_nfe3_euler.png', 'step_0000030_nfe3_euler.1.png'} <= set(
      os.listdir(os.path.join(workdir, 'samples')))
  assert 'step_0000030_nfe3_euler.1.png' in said


@pytest.mark.slow
def test_toy_flow_matching_config_learns_the_distribution(tmp_path):
  workdir = str(tmp_path / 'toy')
  run_main(['--config=' + TOY, '--workdir=' + workdir])
  results = read_results(workdir)
  many_steps = results[50, 'sliced_w2']
  assert many_steps['value'] < 5 * many_steps['reference'] + 0.005, many_steps


@pytest.mark.slow
def test_digits_quickstart_makes_recognisable_digits(tmp_path):
  """README command 1, as written (its own data directory): samples are classified as the asked-for digit."""
  workdir = str(tmp_path / 'quickstart')
  run_main(['--config=' + DIGITS, '--workdir=' + workdir, '--config.data.dir=' + str(tmp_path / 'data')],
           timeout=1200)
  results = read_results(workdir)
  assert results[50, 'class_accuracy']['value'] > 0.85, results
  assert results[50, 'frechet_digits']['value'] < 10 * results[50, 'frechet_digits']['reference'], results


@pytest.mark.slow
@pytest.mark.parametrize('method,nfe', [('meanflow', 1), ('split_meanflow', 1), ('twinflow', 1),
                                        ('consistency_fm', 2), ('shortcut', 4), ('sct', 1),
                                        ('ict', 1), ('ct', 1)])
def test_toy_few_step_configs_sample_in_few_steps(tmp_path, method, nfe):
  """Each few-step toy config, as shipped, gets within reach of the data at its designed step count, where one
  or two steps of the flow-matching teacher are far off (sliced W2 0.95 at 1 NFE)."""
  workdir = str(tmp_path / method)
  run_main(['--config=' + str(REPO / f'configs/toy/{method}.py'), '--workdir=' + workdir], timeout=1200)
  row = read_results(workdir)[nfe, 'sliced_w2']
  assert row['value'] < 0.05, row


@pytest.fixture(scope='module')
def toy_edm_teacher(tmp_path_factory):
  """configs/toy/edm.py as shipped, and its ODE pairs for DMD: the toy distillation configs' teacher."""
  root = tmp_path_factory.mktemp('toy_teacher')
  workdir, pairs = str(root / 'toy_edm'), str(root / 'toy_edm_pairs')
  run_main(['--config=' + str(REPO / 'configs/toy/edm.py'), '--workdir=' + workdir], timeout=1200)
  from fewstep_jax.tools import generate_pairs as reflow
  reflow.generate_pairs(workdir, pairs, 4096, nfe=35)
  return workdir, pairs


@pytest.mark.slow
@pytest.mark.parametrize('method,nfe', [('dmd2', 1), ('dmd', 1), ('diff_instruct', 1), ('sid', 1), ('sim', 1),
                                        ('tdm', 4)])
def test_toy_distillation_configs_sample_in_few_steps(tmp_path, toy_edm_teacher, method, nfe):
  """Each toy score-distillation config, as shipped, distils the shipped toy EDM teacher (sliced W2 0.62 at 1 NFE,
  0.0066 at 35) to within reach of the data in one step (four for TDM)."""
  teacher, pairs = toy_edm_teacher
  workdir = str(tmp_path / method)
  extra = ['--config.method.regression_pairs=' + pairs] if method == 'dmd' else []
  run_main(['--config=' + str(REPO / f'configs/toy/{method}.py'), '--workdir=' + workdir,
            '--config.method.teacher=' + teacher] + extra, timeout=1200)
  row = read_results(workdir)[nfe, 'sliced_w2']
  assert row['value'] < 0.05, row
