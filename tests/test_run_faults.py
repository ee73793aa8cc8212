"""Faults of a run's files, disk and workdir: damaged checkpoints, a trainer deleting the step an eval reads, two
trainers on one workdir, a full disk, a read-only eval directory, torn small files, resumes that would change the
run's meaning, and evaluations that must add to earlier results rather than replace them."""
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, run_main
from fewstep_jax.config_base import load_config
from fewstep_jax.errors import CheckpointError, DiskFullError, RunError, WorkdirInUseError
from fewstep_jax.eval import evaluate as evaluate_lib
from fewstep_jax.train import checkpoint as checkpoint_lib
from fewstep_jax import trainer
from fewstep_jax.train.workdir import LOCK_FILE, WorkdirLock

# Orbax's failed reads leave TensorStore objects that pytest reports as unraisable; the failures are the point here.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')

TOY = str(REPO / 'configs/toy/flow_matching.py')
# Checkpoints at steps 2 and 4; a constant schedule, so that a test may extend the run.
SMALL = {'network.hidden': 32, 'network.depth': 1, 'train.num_steps': 4, 'train.log_every': 1,
         'train.checkpoint_every': 2, 'train.tensorboard': False, 'optim.schedule': 'constant',
         'eval.nfe': (1,), 'eval.num_samples': 64, 'eval.at_end': False}


def small_config(**overrides):
  return load_config(TOY, dict(SMALL, **overrides))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A finished 4-step run, checkpoints at 2 and 4, and the Run its restores use."""
  workdir = str(tmp_path_factory.mktemp('trained') / 'run')
  trainer.train(small_config(), workdir)
  return workdir, trainer.Run(small_config())


@pytest.fixture
def run_copy(trained, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained[0], workdir)
  return workdir


def steps(workdir):
  return checkpoint_lib.committed_steps(os.path.join(workdir, 'checkpoints'))


def damage(workdir, step, how):
  """Damages step `step`'s state. A data file may also hold bytes no array refers to (a restore of such a
  file's first half returns every value intact), so truncation and zeroing touch every array data file: the
  damage must reach bytes a restore reads."""
  state = os.path.join(workdir, 'checkpoints', str(step), 'state')
  if how in ('truncated', 'zeroed'):
    for array_file in glob.glob(os.path.join(state, 'ocdbt.process_0', 'd', '*')):
      size = os.path.getsize(array_file)
      with open(array_file, 'r+b') as f:
        if how == 'truncated':
          f.truncate(min(size, 12))  # Past its header: no array value survives.
        else:
          f.write(b'\0' * size)
  elif how == 'no_metadata':
    os.remove(os.path.join(state, '_METADATA'))
  elif how == 'garbage_manifest':
    with open(os.path.join(state, 'manifest.ocdbt'), 'wb') as f:
      f.write(b'not a manifest' * 8)


@pytest.mark.parametrize('how', ['truncated', 'zeroed', 'no_metadata', 'garbage_manifest'])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_step(trained, run_copy, how, capsys):
  damage(run_copy, 4, how)
  state, step = trainer.restore_latest(trained[1], run_copy)
  said = capsys.readouterr().out
  assert step == 2 and int(state.step) == 2
  assert 'checkpoint step 4 cannot be restored' in said and 'Falling back to step 2' in said
  assert os.path.join(run_copy, 'checkpoints', '4') in said  # The file (or the step's files) is named.
  assert steps(run_copy) == [2, 4]  # Eval reads only.


def test_training_resumes_before_a_damaged_step_and_keeps_its_files(run_copy, capsys):
  damage(run_copy, 4, 'truncated')
  _, state, finished = trainer.train(small_config(), run_copy)
  said = capsys.readouterr().out
  assert finished and int(state.step) == 4 and 'resuming from the checkpoint at step 2' in said
  assert steps(run_copy) == [2, 4]
  assert os.path.isdir(os.path.join(run_copy, checkpoint_lib.SET_ASIDE, '4.damaged'))


def test_every_step_damaged_names_each_and_the_way_out(trained, run_copy):
  damage(run_copy, 4, 'no_metadata')
  damage(run_copy, 2, 'garbage_manifest')
  with pytest.raises(CheckpointError, match=r'step 4: .*_METADATA is missing.*step 2: .*manifest.ocdbt.*'
                                            r'--config.train.resume_step'):
    trainer.restore_latest(trained[1], run_copy)


def test_a_step_without_commit_marker_is_not_a_checkpoint(trained, run_copy):
  for marker in checkpoint_lib.COMMIT_MARKERS:
    os.remove(os.path.join(run_copy, 'checkpoints', '4', marker))
  assert steps(run_copy) == [2]
  assert trainer.restore_latest(trained[1], run_copy)[1] == 2
  _, state, _ = trainer.train(small_config(), run_copy)  # Resumes at 2 and saves 4 anew.
  assert int(state.step) == 4 and steps(run_copy) == [2, 4]
  assert os.path.isdir(os.path.join(run_copy, checkpoint_lib.SET_ASIDE, '4.uncommitted'))


def test_resume_step_chooses_the_checkpoint_and_sets_the_later_ones_aside(trained, run_copy):
  with pytest.raises(CheckpointError, match='resume_step=3 is not a committed checkpoint'):
    trainer.restore_latest(trainer.Run(small_config(**{'train.resume_step': 3})), run_copy)
  assert trainer.restore_latest(trainer.Run(small_config(**{'train.resume_step': 2})), run_copy)[1] == 2
  _, state, _ = trainer.train(small_config(**{'train.resume_step': 2}), run_copy)
  assert int(state.step) == 4 and steps(run_copy) == [2, 4]
  assert os.path.isdir(os.path.join(run_copy, checkpoint_lib.SET_ASIDE, '4.after_resume_step'))
  # The same command again (the run extended) continues from its own newest step, not from step 2 once more.
  _, state, _ = trainer.train(small_config(**{'train.resume_step': 2, 'train.num_steps': 6}), run_copy)
  assert int(state.step) == 6 and steps(run_copy) == [2, 4, 6]
  assert sorted(os.listdir(os.path.join(run_copy, checkpoint_lib.SET_ASIDE))) == ['4.after_resume_step',
                                                                                 'resumed_from']


def test_eval_retries_when_the_live_trainer_deletes_the_step_it_reads(trained, run_copy, monkeypatch, capsys):
  """The race of an eval beside a trainer with a small max_to_keep: the step being read disappears."""
  original = checkpoint_lib.Checkpointer.restore
  deleted = []

  def restore_while_the_trainer_deletes(self, step, *args):
    if not deleted:
      deleted.append(step)
      shutil.rmtree(os.path.join(self.directory, str(step)))
    return original(self, step, *args)

  monkeypatch.setattr(checkpoint_lib.Checkpointer, 'restore', restore_while_the_trainer_deletes)
  _, step = trainer.restore_latest(trained[1], run_copy)
  assert deleted == [4] and step == 2
  assert 'checkpoint step 4 was deleted while being read' in capsys.readouterr().out


def test_a_second_trainer_on_a_live_workdir_is_refused(run_copy, capsys):
  config = small_config(**{'train.num_steps': 6})
  with WorkdirLock(run_copy):  # A live trainer of this host: this process.
    with pytest.raises(WorkdirInUseError, match=rf'in use by a trainer on host .* with pid {os.getpid()}'):
      trainer.train(config, run_copy)
  assert steps(run_copy) == [2, 4] and not os.path.exists(os.path.join(run_copy, LOCK_FILE))
  # A lock whose trainer was killed (its pid runs no more) is stale: taken over, with a message.
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  with open(os.path.join(run_copy, LOCK_FILE), 'w') as f:
    json.dump({'host': WorkdirLock(run_copy).owner['host'], 'pid': dead.pid, 'since': 'earlier'}, f)
  _, state, _ = trainer.train(config, run_copy)
  assert int(state.step) == 6 and 'taking over the stale lock' in capsys.readouterr().out
  assert not os.path.exists(os.path.join(run_copy, LOCK_FILE))


def test_a_full_disk_stops_with_the_space_needed_and_keeps_the_last_checkpoint(run_copy, monkeypatch):
  monkeypatch.setattr(trainer.shutil, 'disk_usage', lambda path: shutil._ntuple_diskusage(1 << 30, 1 << 30, 4096))
  with pytest.raises(DiskFullError, match=r'not enough free space in .*checkpoints.* needs about [\d.]+ MiB, '
                                          r'0.0 MiB are free; the last checkpoint \(step 4\) is kept'):
    trainer.train(small_config(**{'train.num_steps': 6}), run_copy)
  assert steps(run_copy) == [2, 4]
  assert not os.path.exists(os.path.join(run_copy, LOCK_FILE))


def test_an_orbax_write_error_of_a_full_disk_is_one_disk_full_error(run_copy, monkeypatch):
  def no_space(*args, **kwargs):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(checkpoint_lib.Checkpointer, 'save', no_space)
  with pytest.raises(DiskFullError, match=r'no space left on the device of .*run .*last committed checkpoint'):
    trainer.train(small_config(**{'train.num_steps': 6}), run_copy)
  assert steps(run_copy) == [2, 4]


def test_eval_checks_that_it_can_write_before_it_samples(trained, run_copy, monkeypatch):
  os.makedirs(os.path.join(run_copy, 'eval'), exist_ok=True)
  shutil.rmtree(os.path.join(run_copy, 'eval'))
  with open(os.path.join(run_copy, 'eval'), 'w') as f:  # Where the eval directory should be: unwritable.
    f.write('in the way')
  monkeypatch.setattr(evaluate_lib, 'generate_batches', lambda *args: pytest.fail('sampled before checking'))
  state, step = trainer.restore_latest(trained[1], run_copy)
  with pytest.raises(RunError, match=r'cannot write to .*eval'):
    evaluate_lib.evaluate(trained[1], state, run_copy, step)


def test_a_torn_metrics_row_is_dropped_on_resume_and_a_damaged_config_is_named(run_copy, capsys):
  path = os.path.join(run_copy, 'metrics.jsonl')
  with open(path, 'a') as f:
    f.write('{"step": 5, "loss": 0.')  # A crash mid-append.
  trainer.train(small_config(**{'train.num_steps': 6}), run_copy)
  assert 'dropping its last line' in capsys.readouterr().out
  with open(path) as f:
    assert [json.loads(line)['step'] for line in f] == [1, 2, 3, 4, 5, 6]
  with open(os.path.join(run_copy, 'config.json'), 'w') as f:
    f.write('{"method": {"na')
  with pytest.raises(RunError, match=r'config.json is damaged'):
    trainer.train(small_config(**{'train.num_steps': 6}), run_copy)


def test_resuming_with_another_num_steps_is_refused_when_the_schedule_depends_on_it(run_copy):
  config = small_config(**{'train.num_steps': 6})
  trainer.check_workdir_matches(run_copy, config, trainer.run_defining_fields(config))  # Constant: allowed.
  cosine = small_config(**{'train.num_steps': 6, 'optim.schedule': 'cosine'})
  with pytest.raises(ValueError, match=r'train.num_steps = 4 there, 6 now.*rescale'):
    trainer.check_workdir_matches(run_copy, cosine, trainer.run_defining_fields(cosine))


def test_a_teacher_of_other_toy_data_is_refused(run_copy):
  from fewstep_jax import runs
  teacher = runs.open_teacher(run_copy)
  moons = small_config(**{'data.toy': 'moons'})
  with pytest.raises(ValueError, match=r"data.toy = '8gaussians' there, 'moons' here"):
    runs.check_teacher(teacher, 'method.teacher', moons, (2,), 0, same_network=False)
  runs.check_teacher(teacher, 'method.teacher', small_config(), (2,), 0, same_network=False)


@pytest.mark.slow  # About 30 s: two evaluations of a trained run.
def test_eval_merges_rows_and_reads_the_runs_stored_config(run_copy):
  """A run trained with command-line overrides (the network here) is evaluated without repeating them; a second
  evaluation at other NFEs adds its rows to the first's."""
  def results():
    with open(os.path.join(run_copy, 'eval', 'results.json')) as f:
      return {(row['nfe'], row['metric'], row['step']) for row in json.load(f)}

  common = ['--mode=eval', '--config=' + TOY, '--workdir=' + run_copy, '--config.eval.num_samples=64']
  run_main(common + ['--config.eval.nfe=(1,2)'])
  first = results()
  assert {nfe for nfe, _, _ in first} == {1, 2} and {step for _, _, step in first} == {4}
  run_main(common + ['--config.eval.nfe=(2,3)'])
  assert results() == first | {(3, metric, 4) for _, metric, _ in first}
  refused = run_main(common + ['--config.network.hidden=64'], check=False)
  assert refused.returncode != 0 and "may override only eval." in refused.stderr and "differ from the run" in refused.stderr


def test_training_in_a_notebook_thread_without_a_workdir_writes_nothing(tmp_path, monkeypatch):
  """fewstep_jax.train outside the main thread (no signal handlers there) and in memory (workdir=None)."""
  import threading
  monkeypatch.chdir(tmp_path)
  outcome = {}

  def train_in_thread():
    try:
      outcome['result'] = trainer.train(small_config(**{'train.num_steps': 2}), None)
    except BaseException as error:  # Reported below: a thread's exception would otherwise be lost.
      outcome['error'] = error

  thread = threading.Thread(target=train_in_thread)
  thread.start()
  thread.join()
  assert 'error' not in outcome, outcome.get('error')
  _, state, finished = outcome['result']
  assert finished and int(state.step) == 2 and os.listdir(tmp_path) == []


def test_a_young_ema_is_evaluated_beside_the_raw_parameters():
  assert evaluate_lib.parameter_copies('ema_0.999', 200) == ['ema_0.999', 'params']  # 0.999^200 = 82%.
  assert evaluate_lib.parameter_copies('ema_0.999', 6000) == ['ema_0.999']
  assert evaluate_lib.parameter_copies('params', 10) == ['params']


def test_the_space_check_counts_the_save_still_in_flight(tmp_path, monkeypatch):
  """The check before a save waits for the previous (asynchronous) save: that one is the last checkpoint kept."""
  calls = []

  def free_once(path):
    calls.append(path)
    return shutil._ntuple_diskusage(1 << 30, 0, (1 << 30) if len(calls) == 1 else 4096)

  monkeypatch.setattr(trainer.shutil, 'disk_usage', free_once)
  with pytest.raises(DiskFullError, match=r'the last checkpoint \(step 1\) is kept'):
    trainer.train(small_config(**{'train.checkpoint_every': 1}), str(tmp_path / 'run'))
  assert steps(str(tmp_path / 'run')) == [1]


def test_the_data_file_check_before_a_partial_read_refuses_only_certain_damage(tmp_path):
  """An OCDBT data file may hold several records, so it can be longer than its first record's declared length (a
  digits checkpoint had one: 25090 bytes, first record 24333); only a shorter file, or a zeroed one, is damaged."""
  from fewstep_jax.train.checkpoint import DATA_MAGIC, _damaged_data_files
  data = tmp_path / 'state' / 'd'
  data.mkdir(parents=True)
  record = lambda declared, size: DATA_MAGIC + declared.to_bytes(8, 'little') + b'x' * (size - 12)
  (data / 'two_records').write_bytes(record(100, 150))
  (data / 'whole').write_bytes(record(100, 100))
  assert _damaged_data_files(str(tmp_path / 'state'), certain_only=True) == []
  (data / 'cut').write_bytes(record(100, 60))
  (data / 'zeroed').write_bytes(b'\0' * 64)
  found = _damaged_data_files(str(tmp_path / 'state'), certain_only=True)
  assert sorted(found) == sorted([f'{data / "cut"} (truncated)', f'{data / "zeroed"} (zeroed)'])
