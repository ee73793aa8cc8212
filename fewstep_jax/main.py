r"""fewstep_jax entry point.

  python -m fewstep_jax.main --config=configs/digits/flow_matching.py --workdir=runs/quickstart \
      [--mode=train|eval|sample] [--config.train.num_steps=2000 ...]

train: trains, or resumes from the latest checkpoint in --workdir (the same command continues a stopped run),
then writes sample images. eval: evaluates the latest checkpoint at every config.eval.nfe and merges the rows into
eval/results.json. sample: writes sample images of the latest checkpoint. A method that trains nothing (method
'teacher', a teacher run's own sampler: configs/sd15/teacher.py) is evaluated and sampled from its config and inputs,
without a checkpoint.

Compiled programs are kept in a persistent cache (--compile_cache=DIR, default ~/.cache/fewstep_jax/xla;
--compile_cache= for none), so a re-run skips most of its compilation. On Linux with glibc the command restarts
itself once with allocator settings that keep XLA:CPU's step buffers mapped (fewstep_jax/allocator.py;
FEWSTEP_JAX_MALLOC=system runs without them).

eval and sample read the run's own stored config (workdir/config.json), so a run trained with command-line
overrides is evaluated as it was trained; --config is then optional, and command-line overrides may change only
the fields in EVAL_FIELDS (what to evaluate, where the data lives, which step, the mesh, the sampling guidance).
Without --config, absl knows no --config.a.b flags (a config file defines them), so `parse_flags` sets those
arguments aside and `parse_overrides` parses them against the stored config's field types, as ml_collections'
config_flags parses them against a config file.

User errors (a RunError: a missing teacher run or dataset, a config value that cannot work, a damaged file) end
with one line, `error: ...`, and exit status 1.
"""
if __name__ == '__main__':  # Before anything is imported: the restart should cost nothing.
  from fewstep_jax import allocator
  allocator.reexec_with_tunables()

import copy
import json
import os
import re
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from fewstep_jax import compile_cache, config_base, methods
from fewstep_jax.errors import ConfigError, RunError
from fewstep_jax.eval import evaluate as evaluate_lib
from fewstep_jax.methods.flow_map import AverageVelocityMethod
from fewstep_jax import trainer
from fewstep_jax.train import files
from fewstep_jax.train.workdir import WorkdirLock

config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/<dataset>/<method>.py).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics, samples, eval results.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'sample'], 'What to do.')
flags.DEFINE_string('compile_cache', None, 'Directory of the persistent compilation cache (default: '
                    '$JAX_COMPILATION_CACHE_DIR, else ~/.cache/fewstep_jax/xla); empty (--compile_cache=) turns it '
                    'off.')
flags.mark_flags_as_required(['workdir'])
FLAGS = flags.FLAGS

# Fields eval and sample may override on the run's stored config: they change what is measured or where files
# are, not what was trained. method.guidance is the sampler's CFG scale (a row's `sampler` names it).
EVAL_FIELDS = ('eval.', 'mesh.', 'data.dir', 'data.vae', 'train.resume_step', 'method.guidance')

# A command-line override of a config field (--config.a.b=value, or --noconfig.a.b for a boolean) and the flag
# that names the config file (--config=FILE or --config FILE): the patterns ml_collections' config_flags matches.
OVERRIDE = re.compile(r'^--?(?:no)?config\.([^=]+)')
CONFIG_FILE = re.compile(r'^--?config(=|$)')


def _nfe_check(own: bool, evaluated: bool):
  """on_built(run): every eval.nfe must be one the run's sampler can spend with its own solver (own: the sample
  grids') and with each of eval.solvers (evaluated), checked before any state is made, restored or sampled."""
  def check(run):
    names = ((None,) if own else ()) + (evaluate_lib.solvers(run) if evaluated else ())
    evaluate_lib.check_nfes(run, solver_names=tuple(dict.fromkeys(names)))
  return check


def _train(config, workdir):
  # The end of training samples its grids (the method's own solver) and evaluates (eval.solvers) at every eval.nfe.
  run, state, finished = trainer.train(
      config, workdir, on_built=_nfe_check(own=True, evaluated=config.eval.at_end),
      on_sample=lambda run, state, step: evaluate_lib.write_samples(run, state, workdir, step))
  metrics = evaluate_lib.metric_names(config, run.data) if finished and config.eval.at_end else ()
  unset = evaluate_lib.unset_files(config, metrics)
  if unset:
    print(f'no evaluation at the end: {", ".join(metrics)} need {", ".join(unset)} (then --mode=eval)', flush=True)
  elif metrics:
    evaluate_lib.evaluate(run, state, workdir, int(state.step))
  if not finished:  # Stopped by a signal: the trainer said how to resume.
    return
  print(f'done: checkpoints in {os.path.join(workdir, "checkpoints")}, samples in {os.path.join(workdir, "samples")}'
        + (f', results in {os.path.join(workdir, "eval", "results.json")}'
           if os.path.exists(os.path.join(workdir, 'eval', 'results.json')) else '')
        + f', metrics in {os.path.join(workdir, "metrics.jsonl")}', flush=True)


def stored_config(workdir: str, overrides: dict):
  """The run's config.json as a locked ConfigDict, with `overrides` ({'eval.nfe': (1, 2)}) of EVAL_FIELDS
  applied; overrides of other fields are errors, unless they repeat the run's own values."""
  path = os.path.join(workdir, 'config.json')
  config = config_base.config_from_json(files.read_json(path))

  def same(key):  # The training command repeated with --mode=eval: its overrides change nothing.
    node, leaf = config_base.config_node(config, key)
    return json.loads(json.dumps(overrides[key])) == json.loads(json.dumps(node[leaf]))

  refused = sorted(key for key in overrides if not _eval_field(key) and not same(key))
  if refused:
    raise ConfigError(f'--mode=eval and --mode=sample use the run\'s stored config ({path}); they may override only '
                      f'{", ".join(EVAL_FIELDS)} fields, and {refused} differ from the run\'s. Train a new run to '
                      'change those.')
  if 'method.guidance' in overrides and not same('method.guidance') and _guidance_is_trained_in(config):
    raise ConfigError(f'method.guidance of this {config.method.name!r} run is folded into its weights in training '
                      '(a flow map samples with one network call a step): it cannot change at --mode=eval or sample.')
  for key, value in overrides.items():
    if not _eval_field(key):
      continue
    node, leaf = config_base.config_node(config, key)
    node[leaf] = value
  return config


def _eval_field(key: str) -> bool:
  return any(key == field or key.startswith(field if field.endswith('.') else field + '.') for field in EVAL_FIELDS)


def _guidance_is_trained_in(config) -> bool:
  """Whether the run's method.guidance shaped its training target rather than its sampler: a flow map's sampler
  takes no guidance (SplitMeanFlow folds it into the target)."""
  return issubclass(methods.method_class(config.method.name), AverageVelocityMethod)


def parse_overrides(config, args) -> dict:
  """{field: value} of the override arguments `args` (['--config.eval.nfe=(1,2)', ...]) parsed against the field
  types of `config` exactly as ml_collections' config_flags parses them against a --config file (`config` itself is
  not changed); a ConfigError naming the argument for an unknown field or a value its type cannot take."""
  for match in filter(None, map(OVERRIDE.match, args)):
    try:
      config_base.config_node(config, match.group(1))
    except config_base.ConfigKeyError as error:
      raise ConfigError(f'{match.string}: {error}') from None
  values = flags.FlagValues()
  argv = [sys.argv[0], *args]
  config_flags.DEFINE_config_dict('config', copy.deepcopy(config), flag_values=values, sys_argv=argv)
  try:
    values(argv)
  except flags.Error as error:
    raise ConfigError(str(error)) from None
  return dict(config_flags.get_override_values(values['config']))


def _config_for(mode: str, workdir: str, set_aside=()):
  """train: the --config file with its overrides. eval / sample: the workdir's stored config if there is one, with
  the overrides of --config's flags or, without --config, the override arguments `parse_flags` set aside."""
  path = os.path.join(workdir, 'config.json')
  if mode == 'train' or not os.path.exists(path):
    if FLAGS.config is None:
      raise ConfigError('--config=FILE is required' + ('' if mode == 'train' else
                                                       f': {workdir} holds no trained run to read a config from'))
    return FLAGS.config
  imported = files.read_json(path).get('imported_from')
  if imported:  # tools.import_checkpoint's run: parameters and a network, no method or data to sample with.
    raise ConfigError(f'{workdir} holds a network imported from {imported}, not a trained run: sample it as a teacher '
                      f'(--config=configs/sd15/teacher.py or another config of method \'teacher\', '
                      f'--config.method.teacher={workdir}) into another --workdir')
  if FLAGS.config is not None:
    overrides = config_flags.get_override_values(FLAGS['config'])
  else:
    overrides = parse_overrides(config_base.config_from_json(files.read_json(path)), set_aside)
  print(f'{mode}: using the run\'s stored config {path}' + (f' with {overrides}' if overrides else ''), flush=True)
  return stored_config(workdir, overrides)


def _restored(config, workdir, check):
  run, state, step = trainer.restore_run(config, workdir, on_built=check)
  holder = WorkdirLock(workdir).live_holder()
  if holder is not None:
    print(f'the run is live (a trainer on host {holder["host"]}, pid {holder["pid"]}): read its newest committed '
          f'step, {step}', flush=True)
  return run, state, step


def _eval(config, workdir):
  run, state, step = _restored(config, workdir, _nfe_check(own=False, evaluated=True))
  evaluate_lib.evaluate(run, state, workdir, step)


def _sample(config, workdir):
  run, state, step = _restored(config, workdir, _nfe_check(own=True, evaluated=False))
  evaluate_lib.write_samples(run, state, workdir, step)


MODES = {'train': _train, 'eval': _eval, 'sample': _sample}


def _config_error(argv, error) -> str:
  """One line for a config that failed to load or to take a command-line override."""
  paths = [arg.split('=', 1)[1] for arg in argv if arg.startswith('--config=')]
  if paths:
    try:
      config = config_base.load_config(paths[-1])
    except Exception as file_error:  # The file itself is broken: name the line of the file that failed.
      frames = [frame for frame in traceback.extract_tb(file_error.__traceback__)
                if frame.filename.endswith(paths[-1].lstrip('./'))]
      if not frames:
        return f'{paths[-1]}: {_last_line(file_error)}'
      where = f'{paths[-1]}, line {frames[-1].lineno} ({frames[-1].line.strip()})'
      unknown = re.search(r'Key "(\w+)" does not exist', str(file_error))
      if unknown:  # ml_collections' locked-config message, shortened to what matters.
        suggestion = re.search(r'Did you mean "(\w+)"', str(file_error))
        return (f'{where}: unknown config key {unknown.group(1)!r}'
                + (f'; did you mean {suggestion.group(1)!r}?' if suggestion else ''))
      return f'{where}: {_last_line(file_error)}'
    for arg in argv:
      match = re.match(r'--config\.([^=]+)=?', arg)
      if match:
        try:
          config_base.config_node(config, match.group(1))
        except KeyError as key_error:
          return f'{arg}: {key_error}'
  return _last_line(error)


def _last_line(error) -> str:
  message = str(error).strip().splitlines()
  return f'{type(error).__name__}: {message[-1] if message else ""}'.replace('\\n', ' ')


def split_overrides(argv) -> tuple:
  """(the other arguments, the override arguments): without a --config file absl cannot parse --config.a.b=value
  (the file defines those flags), so they are set aside for the stored config; with one, none are."""
  if any(CONFIG_FILE.match(arg) for arg in argv):
    return list(argv), []
  rest, overrides = [], []
  taking_value = False
  for arg in argv:
    if taking_value and not arg.startswith('-'):  # The value of `--config.a.b value`.
      overrides.append(arg)
      taking_value = False
    elif OVERRIDE.match(arg):
      overrides.append(arg)
      taking_value = '=' not in arg
    else:
      rest.append(arg)
      taking_value = False
  return rest, overrides


def parse_flags(argv):
  """absl's flag parsing, with a config that fails to load (a misspelled key in the file or on the command line)
  reported in one line instead of a traceback through the flags library. Returns [program, *the override arguments
  set aside by `split_overrides`] for `main`."""
  rest, overrides = split_overrides(argv)
  try:
    positional = FLAGS(rest)
  except flags.Error as error:
    sys.exit(f'error: {error}; pass --help for the flags.')
  except Exception as error:  # Raised inside the config file or by an override.
    sys.exit(f'error: {_config_error(argv, error)}')
  if len(positional) > 1:
    sys.exit(f'error: unexpected arguments {positional[1:]}: every argument is a flag (--name=value); pass --help '
             'for the flags.')
  return positional[:1] + overrides


def main(argv):
  # Orbax and grain log every checkpoint step at INFO; progress lines are printed, not logged.
  logging.set_verbosity(logging.WARNING)
  compile_cache.enable(compile_cache.default_directory() if FLAGS.compile_cache is None else FLAGS.compile_cache)
  try:
    MODES[FLAGS.mode](_config_for(FLAGS.mode, FLAGS.workdir, argv[1:]), FLAGS.workdir)
  except RunError as error:  # User errors and faults of the run's files, disk or workdir: the message says it all.
    sys.exit(f'error: {error}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
