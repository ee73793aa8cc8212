"""The command line as a new user meets it: eval and sample of a trained run without --config take --config.a.b
overrides against its stored config; an NFE the sampler cannot spend stops the command before any work; and user
errors (a missing teacher run, an unprepared dataset, a bad override) end in one line and a non-zero exit; a
distillation run names the teacher it read."""
import json
import os

import ml_collections
import pytest

from conftest import REPO, run_main
from fewstep_jax import api, main, runs
from fewstep_jax.config_base import load_config
from fewstep_jax.errors import ConfigError
from fewstep_jax.eval import evaluate as evaluate_lib
from fewstep_jax import trainer
from fewstep_jax.train import files

TINY = {'network.hidden': 16, 'network.depth': 1, 'train.num_steps': 2, 'train.batch_size': 16, 'train.log_every': 1,
        'train.tensorboard': False, 'eval.at_end': False, 'eval.nfe': (1,), 'eval.sample_grid': 4}


def one_line_error(result) -> str:
  """The error line of a command that failed as a user error: exit status 1, no traceback."""
  assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith('error: '), result.stderr[-3000:]
  return line


@pytest.fixture(scope='module')
def toy_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('toy') / 'run')
  trainer.train(load_config(str(REPO / 'configs/toy/flow_matching.py'), TINY), workdir)
  return workdir


def guided_digits_config(**overrides):
  """Class-conditional digits flow matching on a tiny MLP, guided (CFG 1.5): each sampling step costs 2 calls."""
  config = api.base_config(method='flow_matching', network='mlp', dataset='digits')
  config.method.guidance = 1.5
  for key, value in dict(TINY, **overrides).items():
    section, field = key.split('.')
    config[section][field] = value
  return config


@pytest.fixture(scope='module')
def guided_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('digits') / 'run')
  trainer.train(guided_digits_config(**{'eval.nfe': (2,)}), workdir)
  return workdir


def test_eval_without_config_applies_overrides_to_the_stored_config(toy_run):
  said = run_main(['--mode=eval', '--workdir=' + toy_run, "--config.eval.nfe=(1,2)", '--config.eval.num_samples',
                   '64'])
  assert "with {'eval.nfe': (1, 2), 'eval.num_samples': 64}" in said.stdout
  with open(os.path.join(toy_run, 'eval', 'results.json')) as f:
    rows = json.load(f)
  assert {row['nfe'] for row in rows} == {1, 2}
  assert {row['metric'] for row in rows} == {'sliced_w2', 'mmd_rbf', 'off_support', 'parts_covered'}
  refused = one_line_error(run_main(['--mode=eval', '--workdir=' + toy_run, '--config.network.hidden=64'],
                                    check=False))
  assert "may override only eval." in refused and "['network.hidden'] differ from the run's" in refused


def test_overrides_parse_against_the_stored_config_as_config_flags_does(toy_run):
  stored = api.open_run(toy_run).config
  assert main.parse_overrides(stored, ['--config.eval.nfe=(1,2)', '--config.method.guidance=2',
                                       '--noconfig.eval.at_end', '--config.data.dir', '/data']) == {
      'eval.nfe': (1, 2), 'method.guidance': 2.0, 'eval.at_end': False, 'data.dir': '/data'}
  with pytest.raises(ConfigError, match=r"--config.eval.nfee=3: unknown config key 'eval.nfee'.*did you mean "
                                        r"'eval.nfe'"):
    main.parse_overrides(stored, ['--config.eval.nfee=3'])
  with pytest.raises(ConfigError, match=r'--config.eval.num_samples=1.5: invalid literal for int'):
    main.parse_overrides(stored, ['--config.eval.num_samples=1.5'])
  assert main.split_overrides(['prog', '--mode=eval', '--config.data.dir', '/data', '--workdir=W']) == (
      ['prog', '--mode=eval', '--workdir=W'], ['--config.data.dir', '/data'])
  assert main.split_overrides(['prog', '--config=FILE', '--config.eval.nfe=1'])[1] == []  # config_flags' own.


def test_eval_may_change_the_sampling_guidance_but_not_one_trained_into_the_weights(tmp_path):
  for name in ('flow_matching', 'split_meanflow'):
    config = api.base_config(method=name, network='mlp', dataset='toy')
    (tmp_path / name).mkdir()
    files.write_json(str(tmp_path / name / 'config.json'), trainer.config_to_json(config))
  assert main.stored_config(str(tmp_path / 'flow_matching'), {'method.guidance': 2.0}).method.guidance == 2.0
  with pytest.raises(ConfigError, match="method.guidance of this 'split_meanflow' run is folded into its weights"):
    main.stored_config(str(tmp_path / 'split_meanflow'), {'method.guidance': 2.0})


def test_a_guided_run_refuses_an_odd_nfe_before_any_work_and_eval_may_change_the_guidance(guided_run):
  config = guided_digits_config(**{'eval.nfe': (2, 3, 4)})
  with pytest.raises(ConfigError, match=r"eval.nfe=\(2, 3, 4\): this sampler cannot spend 3 network calls "
                                        r"\(with classifier-free guidance .*--config.eval.nfe='\(2,4\)'"):
    evaluate_lib.check_nfes(trainer.Run(config))
  evaluate_lib.check_nfes(trainer.Run(guided_digits_config(**{'eval.nfe': (3,), 'method.guidance': 1.0})))

  refused = one_line_error(run_main(['--mode=eval', '--workdir=' + guided_run, '--config.eval.nfe=(1,2)'],
                                    check=False))
  assert 'eval.nfe=(1, 2): this sampler cannot spend 1 network calls' in refused
  assert not os.path.exists(os.path.join(guided_run, 'eval'))  # Stopped before sampling, and nothing written.
  # The guidance is a sampling choice: eval and sample may change it, and the files say which was used.
  said = run_main(['--mode=sample', '--workdir=' + guided_run, '--config.eval.nfe=(3,)', '--config.method.guidance=1'])
  assert os.listdir(os.path.join(guided_run, 'samples')) == ['step_0000002_nfe3_heun.png']  # Not 'guidance1_5'.
  assert "with {'eval.nfe': (3,), 'method.guidance': 1.0}" in said.stdout


def test_training_refuses_an_odd_guided_nfe_at_startup(tmp_path):
  """The end of training samples at every eval.nfe: an impossible one stops the run before its first step."""
  workdir = str(tmp_path / 'run')
  refused = one_line_error(run_main(['--config=' + str(REPO / 'configs/digits/flow_matching.py'),
                                     '--workdir=' + workdir, '--config.eval.nfe=(2,3)', '--config.train.num_steps=2'],
                                    check=False))
  assert refused.startswith('error: eval.nfe=(2, 3): this sampler cannot spend 3 network calls')
  assert not os.path.exists(os.path.join(workdir, 'checkpoints'))


@pytest.mark.parametrize('args,says', [
    (['--config=configs/toy/sid.py', '--config.method.teacher=/nonexistent'],
     'error: /nonexistent/run_info.json not found: /nonexistent is not a trained fewstep_jax run (method.teacher)'),
    (['--config=configs/cifar10/edm.py', '--config.data.dir={tmp}'],
     "error: TFDS dataset 'cifar10' is not prepared in {tmp}"),
])
def test_a_missing_input_is_one_line(tmp_path, args, says):
  args = [arg.format(tmp=tmp_path) for arg in args]
  line = one_line_error(run_main(args + ['--workdir=' + str(tmp_path / 'run')], check=False))
  assert line.startswith(says.format(tmp=tmp_path)), line


def test_a_distillation_run_names_the_teacher_it_read(toy_edm_run, tmp_path, capsys):
  teacher, small = toy_edm_run
  config = load_config(str(REPO / 'configs/toy/sid.py'), dict(small, **{'method.teacher': teacher}))
  trainer.Run(config)
  said = capsys.readouterr().out
  assert f'method.teacher: {os.path.abspath(teacher)} (edm run, step 2, readout edm, parameters ' in said
  imported = ml_collections.ConfigDict({'method': {'name': 'imported'}, 'imported_from': 'edm-cifar10.pkl'})
  assert runs.describe_run('teachers/edm', imported, {'readout': {'name': 'edm'}}, 0, 'params') == (
      f'{os.path.abspath("teachers/edm")} (imported from edm-cifar10.pkl, readout edm, parameters params)')
