"""experiments/paper_tables: every paper-row config carries its paper's hyperparameters as the table states them, the
table covers every paper-row config, and docs/reproducing.md holds the table and the row sections as rendered."""
import glob
import importlib.util

import pytest

from conftest import REPO
from fewstep_jax.config_base import load_config

_spec = importlib.util.spec_from_file_location('paper_tables_render', REPO / 'experiments/paper_tables/render.py')
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)
ROWS = render.load_rows()
PAPER_DATASETS = ('cifar10', 'imagenet64', 'imagenet256_latent')


def differences(config, setup: dict) -> list:
  """(field, the config's value, the table's) for every field of `setup` whose value the config does not carry."""
  found = []
  for dotted, want in setup.items():
    node = config
    for name in dotted.split('.'):
      node = node[name]
    if (tuple(node) if isinstance(want, tuple) else node) != want:
      found.append((dotted, node, want))
  return found


@pytest.mark.parametrize('row', ROWS, ids=[row['config'].removeprefix('configs/') for row in ROWS])
def test_a_paper_config_carries_the_tables_hyperparameters(row):
  assert differences(load_config(str(REPO / row['config'])), row['setup']) == []


def test_a_changed_config_value_is_caught():
  row = next(row for row in ROWS if row['config'] == 'configs/cifar10/cd.py')
  drifted = load_config(str(REPO / row['config']), {'optim.lr': 5e-4, 'method.target_ema': 'fixed'})
  assert differences(drifted, row['setup']) == [('optim.lr', 5e-4, 4e-4), ('method.target_ema', 'fixed', 'none')]


def test_every_paper_row_config_has_exactly_one_row():
  configs = sorted(path.removeprefix(str(REPO) + '/') for dataset in PAPER_DATASETS
                   for path in glob.glob(str(REPO / 'configs' / dataset / '*.py')) if not path.endswith('/common.py'))
  assert sorted(row['config'] for row in ROWS) == configs


@pytest.mark.parametrize('row', ROWS, ids=[row['config'].removeprefix('configs/') for row in ROWS])
def test_a_row_is_complete(row):
  assert set(row) == {'method', 'dataset', 'config', 'source', 'fid', 'other', 'setup', 'teacher', 'command', 'ours'}
  assert f'--config={row["config"]} ' in row['command']
  for figures in (row['fid'], row['ours']):
    assert all(isinstance(nfe, int) and nfe >= 1 and value > 0 for nfe, value in figures.items())
  assert row['setup'], 'a row names the hyperparameters it pins'


def test_reproducing_md_holds_the_rendered_table_and_rows():
  page = (REPO / 'docs/reproducing.md').read_text()
  assert render.replace_generated(page, render.generated(ROWS)) == page, (
      'docs/reproducing.md is out of date with experiments/paper_tables/table.py: '
      'run python experiments/paper_tables/render.py --write')


def test_every_published_teacher_a_row_reads_has_its_import_command():
  """A row whose teacher or start is an imported directory (teachers/<name>) gets the command that writes it."""
  directories = {directory for row in ROWS for directory in render.published_inputs(row)}
  assert directories and directories <= set(render.PUBLISHED)
  row = next(row for row in ROWS if row['config'] == 'configs/imagenet64/ctm.py')
  assert render.import_command('teachers/cm_imagenet64') in render.row_section(row)
  assert '--arch=cm_imagenet64 --out=teachers/cm_imagenet64' in render.import_command('teachers/cm_imagenet64')
