import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CACHE_VARIABLE = 'JAX_COMPILATION_CACHE_DIR'
# data.dir's default when empty (fewstep_jax.data.default_data_dir): the test session's own directory, never the
# user's ~/.cache/fewstep_jax/data.
DATA_VARIABLE = 'FEWSTEP_JAX_DATA'
# Tests compile hundreds of tiny programs, whose cost is XLA:CPU's LLVM code generation (an eager random.normal:
# about 0.5 s at the default level, 0.25 s at 0); the programs' results do not depend on it. Every test process
# and the subprocesses they start (which inherit XLA_FLAGS: use xla_flags() to add to it) compile at level 0.
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0'


def xla_flags(*flags) -> str:
  """XLA_FLAGS for a subprocess: the test session's, plus `flags` (e.g. a host device count)."""
  return ' '.join([os.environ.get('XLA_FLAGS', ''), *flags]).strip()


def pytest_configure(config):
  """One persistent XLA compilation cache for this test session, shared by both workers and every subprocess they
  start (through the environment, read when jax is imported): the many tests that build the same tiny networks and
  steps compile each program once. It starts empty and is removed at the end, so no run depends on an earlier one."""
  if hasattr(config, 'workerinput'):
    return
  if TEST_XLA_FLAGS not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = xla_flags(TEST_XLA_FLAGS)
  # Datasets built at data.dir's default (the digits) go to a directory of this session, shared by its workers and
  # subprocesses and removed at the end: never into the user's home cache.
  config._fewstep_jax_data = tempfile.mkdtemp(prefix='fewstep_jax_data_')
  os.environ[DATA_VARIABLE] = config._fewstep_jax_data
  if os.environ.get(CACHE_VARIABLE):
    return
  directory = tempfile.mkdtemp(prefix='fewstep_jax_xla_cache_')
  config._fewstep_jax_cache = directory
  os.environ[CACHE_VARIABLE] = directory
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
  if 'jax' in sys.modules:  # Imported already (a plugin): set it there too.
    sys.modules['jax'].config.update('jax_compilation_cache_dir', directory)
    sys.modules['jax'].config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def pytest_unconfigure(config):
  for name in ('_fewstep_jax_cache', '_fewstep_jax_data'):
    directory = getattr(config, name, None)
    if directory:
      shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def repo():
  return REPO


def run_main(args, env_extra=None, timeout=600, check=True, module='fewstep_jax.main'):
  """Runs `python -m MODULE ARGS` (by default the entry point) in a subprocess; returns the CompletedProcess."""
  env = dict(os.environ, **(env_extra or {}))
  result = subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
  if check and result.returncode != 0:
    raise AssertionError(f'main failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}')
  return result


def error_line(result) -> str:
  """The one line a command ended with on bad input (a subprocess.CompletedProcess of run_main(check=False)): exit
  status 1, and stderr that line alone, no traceback."""
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith('error: '), (
      f'expected one error line, exit 1; got {result.returncode}:\n{result.stderr[-3000:]}')
  return lines[0]


def read_metrics(workdir):
  """The rows of workdir/metrics.jsonl."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def losses(workdir):
  return {row['step']: row['loss'] for row in read_metrics(workdir)}


def checkpoint_steps(workdir):
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def perturbed_params(method, seed=0):
  """A method's initial student parameters plus noise, so that a zero-initialised output layer does not make the
  network's output 0."""
  import jax  # Late import: the other helpers here need no JAX.
  params = method.init(jax.random.PRNGKey(seed)).nets['student'].params
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  return jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def described_teachers(config, data_shape, num_classes, readout='edm'):
  """Descriptions (no parameters) of a teacher on config's network for every teacher the configured method
  declares: enough to build the method where a test supplies the teacher's arithmetic itself or never calls it."""
  from fewstep_jax import methods, paths  # Late import: the other helpers here need no JAX.
  from fewstep_jax.inputs import Teacher, TeacherInput
  specs = methods.method_class(config.method.name).inputs(config)
  return {name: Teacher(network=config.network, readout=paths.readout(readout), data_shape=tuple(data_shape),
                        num_classes=num_classes)
          for name, spec in specs.items() if isinstance(spec, TeacherInput)}


def digits_text_conditioning():
  """The captioned digits' text Conditioning as zeros of its shapes (data/digits_text.py), without its prompts:
  token states [16, 64], the pooled caption [64] and SDXL's six size ids, which the 'digits' preset reads."""
  import numpy as np  # Late import, as above.
  from fewstep_jax.conditions import Conditioning
  shapes = {'tokens': (16, 64), 'pooled': (64,), 'time_ids': (6,)}
  return Conditioning('text', null_text={name: np.zeros(shape, np.float32) for name, shape in shapes.items()})


@pytest.fixture(scope='module')
def toy_edm_run(tmp_path_factory):
  """(workdir, its overrides) of a tiny 2-step toy EDM run, once per test module: a teacher or init run."""
  from fewstep_jax.config_base import load_config
  from fewstep_jax import trainer
  workdir = str(tmp_path_factory.mktemp('toy_edm'))
  small = {'network.hidden': 32, 'network.depth': 1, 'train.num_steps': 2, 'train.batch_size': 16,
           'train.log_every': 1, 'train.tensorboard': False, 'eval.at_end': False}
  trainer.train(load_config(os.path.join(REPO, 'configs/toy/edm.py'), small), workdir)
  return workdir, small
