r"""fewstep_jax entry point.

  python -m fewstep_jax.main --config=configs/digits/flow_matching.py --workdir=runs/quickstart \
      [--mode=train|eval|sample] [--config.train.num_steps=2000 ...]

train: trains, or resumes from the latest checkpoint in --workdir (the same command continues a stopped run),
then writes sample images. eval: evaluates the latest checkpoint at every config.eval.nfe and writes
eval/results.json. sample: writes sample images of the latest checkpoint.
"""
from absl import app, flags, logging
from ml_collections import config_flags

from fewstep_jax.eval import evaluate as evaluate_lib
from fewstep_jax.train import trainer

config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/<dataset>/<method>.py).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics, samples, eval results.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'sample'], 'What to do.')
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS


def _train(config, workdir):
  run, state, finished = trainer.train(
      config, workdir,
      on_sample=lambda run, state, step: evaluate_lib.write_samples(run, state, workdir, step))
  if finished and config.eval.at_end and run.data.evaluator in evaluate_lib.EVALUATORS:
    evaluate_lib.evaluate(run, state, workdir, int(state.step))


def _restored(config, workdir):
  run = trainer.Run(config)
  state, step = trainer.restore_latest(run, workdir)
  return run, state, step


def _eval(config, workdir):
  run, state, step = _restored(config, workdir)
  evaluate_lib.evaluate(run, state, workdir, step)


def _sample(config, workdir):
  run, state, step = _restored(config, workdir)
  evaluate_lib.write_samples(run, state, workdir, step)


MODES = {'train': _train, 'eval': _eval, 'sample': _sample}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # Orbax and grain log every checkpoint step at INFO; progress lines are printed, not logged.
  logging.set_verbosity(logging.WARNING)
  MODES[FLAGS.mode](FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
