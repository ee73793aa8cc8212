"""The library API for notebooks and scripts: a method configured, trained, sampled and evaluated in memory, with
the same code paths as the command line (`python -m fewstep_jax.main`).

  from fewstep_jax import api
  config = api.base_config(method='meanflow', network='mlp', dataset='toy')   # or api.load_config(FILE)
  config.train.num_steps = 2000
  trained = api.train(config)                         # in memory (workdir=DIR: checkpoints and resumes)
  samples, labels = api.sample(trained, nfe=1, n=1000)
  data, _ = api.data_samples(trained, n=1000)         # the true distribution, to compare with
  rows = api.evaluate(trained, nfe=(1, 2))            # the embedded metrics, as eval/results.json's rows
  print(api.results_table(rows))
  trained = api.open_run('runs/toy_meanflow')         # a run trained by the command line
"""
import dataclasses
import os

from fewstep_jax import config_base
from fewstep_jax.eval import evaluate as evaluate_lib
from fewstep_jax import trainer
from fewstep_jax.train import files
from fewstep_jax.train.state import TrainState

base_config = config_base.base_config
load_config = config_base.load_config


@dataclasses.dataclass
class Trained:
  """A trained (or opened) run: `run` holds its config, data, method and mesh; `state` its parameters (in memory
  after `train`, the student's parameter copies only after `open_run`)."""
  run: trainer.Run
  state: TrainState
  finished: bool = True

  @property
  def config(self):
    return self.run.config

  @property
  def method(self):
    return self.run.method

  @property
  def step(self) -> int:
    return int(self.state.step)

  def params(self, name: str | None = None):
    """The parameter copy `name` ('params', 'ema_<rate>', ...; default config.eval.params) that sampling uses."""
    return self.run.sampling_params(self.state, name or self.config.eval.params)


def train(config, workdir: str | None = None, *, inputs: dict | None = None) -> Trained:
  """Trains `config` (a ConfigDict: base_config or load_config). workdir=None trains in memory and writes nothing;
  a workdir checkpoints, and resumes a run already there, exactly as the command line does. inputs: the method's
  declared inputs given as values (e.g. {'teacher': fewstep_jax.inputs.Teacher(...)}); the rest are read as the
  config names them. Progress is a bar in Jupyter and on a terminal."""
  run, state, finished = trainer.train(config, workdir, inputs=inputs)
  return Trained(run, state, finished)


def open_run(workdir: str) -> Trained:
  """The newest checkpoint of the run in `workdir` (its stored config, the student's parameter copies only), built
  as it was trained from the teachers it recorded; nothing else is read."""
  trainer.require_checkpoint(workdir)
  config = config_base.config_from_json(files.read_json(os.path.join(workdir, 'config.json')))
  run, state, _ = trainer.restore_run(config, workdir)
  return Trained(run, state)


def sample(trained: Trained, nfe: int, n: int, *, seed: int = 0, params: str | None = None) -> tuple:
  """n samples (numpy [n, *data_shape], in the data's range) and their conditions (labels [n], sample i of class
  i % num_classes; a text condition's arrays; None for unconditional data) with `nfe` network evaluations: the evaluation's sampler, so
  sample i is the same whatever n, the batch size or the device count."""
  return evaluate_lib.generate(trained.run, trained.params(params), int(nfe), int(n), int(seed))


def evaluate(trained: Trained, nfe=None, *, num_samples: int | None = None, params: str | None = None) -> list:
  """The embedded metrics (toy: sliced W2 and MMD; digits: Frechet distance and class accuracy; images: FID / IS
  given their files) at each NFE, as rows {'metric', 'nfe', 'value', 'reference', ...}; `reference` is the metric's
  floor. Defaults: config.eval's nfe, num_samples and params. Nothing is written."""
  return evaluate_lib.evaluation_rows(trained.run, trained.state, trained.step, nfe=nfe, num_samples=num_samples,
                                      params=params)


def data_samples(trained: Trained, n: int, *, split: str = 'test', seed: int = 0) -> tuple:
  """n examples of the run's true data distribution (numpy [n, *data_shape], in the model's range) and their labels
  (None when unlabelled): fresh draws for toy data, a seeded permutation of `split` for a dataset."""
  drawn = trained.run.data.reference_samples(int(n), split, int(seed))
  return drawn['x'], drawn.get('y')


def results_table(rows: list) -> str:
  """Evaluation rows as a markdown table (a column per NFE)."""
  return evaluate_lib.results_table(rows)


__all__ = ['Trained', 'base_config', 'data_samples', 'evaluate', 'load_config', 'open_run', 'results_table', 'sample',
           'train']
