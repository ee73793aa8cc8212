"""experiments/compare.py's dependency graph comes from the configs' declared inputs (no list of teachers), in an
order that trains every run before the runs that read it; its table shows the headline metric per NFE."""
import importlib.util

import pytest

from conftest import REPO

_spec = importlib.util.spec_from_file_location('compare_experiment', REPO / 'experiments/compare.py')
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


@pytest.mark.parametrize('dataset', ['toy', 'digits'])
def test_every_config_of_a_dataset_resolves_into_one_ordered_graph(dataset):
  nodes = compare.build_graph(dataset, compare.config_names(dataset))
  order = compare.topological_order(nodes)
  assert sorted(order) == sorted(nodes)
  position = {name: index for index, name in enumerate(order)}
  for node in nodes.values():
    for source in list(node.needs.values()) + ([node.source] if node.kind == 'pairs' else []):
      assert position[source] < position[node.name], (source, node.name)


def test_the_graph_follows_declared_teachers_starts_and_pairs():
  toy = compare.build_graph('toy', ['tcm', 'dmd', 'reflow', 'meanflow'])
  assert set(toy['tcm'].needs.values()) == {'ect'} and set(toy['ect'].needs.values()) == {'edm'}
  assert toy['dmd'].needs == {'method.teacher': 'edm', 'method.regression_pairs': 'pairs_edm'}
  assert toy['pairs_edm'].kind == 'pairs' and toy['pairs_edm'].source == 'edm'
  assert toy['reflow'].needs == {'method.init_from': 'flow_matching', 'data.pairs_dir': 'pairs_flow_matching'}
  assert toy['meanflow'].needs == {} and 'cd' not in toy
  digits = compare.build_graph('digits', ['sct', 'scd'])
  assert digits['sct'].needs == {'method.init_from': 'trigflow'}
  assert digits['scd'].needs == {'method.teacher': 'flow_matching'}  # runs/quickstart: the README's teacher.
  captioned = compare.build_graph('digits_text', ['cd', 'scd', 'sid'])
  assert captioned['cd'].needs == captioned['scd'].needs == {'method.teacher': 'edm', 'method.init_from': 'edm'}
  assert captioned['sid'].needs == {'method.teacher': 'edm'}


def test_an_input_that_no_config_produces_is_refused():
  with pytest.raises(ValueError, match=r'runs/toy_<name>'):
    compare.producer('runs/somewhere_else', 'toy')


def test_the_table_shows_each_run_at_each_nfe():
  """Each cell: sliced W2 · the off-support share; in italics an NFE the student is not trained for (DMD's one-step
  student at 2); the steps and, for a student updated every k-th step, its updates."""
  def rows(values):
    return [row for n, (w2, off) in values.items() for row in (
        {'metric': 'sliced_w2', 'nfe': n, 'value': w2, 'reference': 0.002},
        {'metric': 'off_support', 'nfe': n, 'value': off, 'reference': 0.011})]
  records = [
      {'name': 'edm', 'kind': 'run', 'method': 'edm', 'teacher': True, 'teacher_nfe': 35, 'reads': {},
       'rows': rows({1: (0.9, 0.5), 2: (0.5, 0.3), 4: (0.2, 0.1), 35: (0.004, 0.012)}), 'train_s': 10.0,
       'eval_s': 2.0, 'steps': 100, 'updates': 100, 'trained_nfes': None},
      {'name': 'pairs_edm', 'kind': 'pairs'},
      {'name': 'dmd', 'kind': 'run', 'method': 'dmd', 'teacher': False, 'teacher_nfe': None,
       'reads': {'method.teacher': 'edm', 'method.regression_pairs': 'pairs_edm'},
       'rows': rows({1: (0.01, 0.02), 2: (0.02, 0.25)}), 'train_s': 12.0, 'eval_s': 3.0, 'steps': 100,
       'updates': 20, 'trained_nfes': [1]}]
  text = compare.table('toy', records, (1, 2, 4))
  assert 'sliced_w2 (floor 0.002) · off_support (floor 1.1%), 100 steps per run' in text
  assert '| edm | `edm` | 0.9 · 50.0% | 0.5 · 30.0% | 0.2 · 10.0% | 0.004 · 1.2% @ 35 | 100 | scratch |' in text
  assert '| dmd | `dmd` | 0.01 · 2.0% | *0.02 · 25.0%* | – |  | 100, 20 | edm, pairs_edm |' in text


def test_a_guided_teacher_is_not_evaluated_at_an_odd_nfe():
  from fewstep_jax import config_base
  from fewstep_jax.methods.registry import build_method
  config = config_base.load_config(str(REPO / 'configs/digits/flow_matching.py'), {})
  method = build_method(config, data_shape=(8, 8, 1), num_classes=10)
  assert config.method.guidance == 1.5
  assert [nfe for nfe in (1, 2, 4) if compare.samples_at(method, nfe, conditional=True)] == [2, 4]
  assert compare.samples_at(method, 1, conditional=False)  # Unconditional: one network call a step.


def test_the_readme_keeps_the_blocks_of_datasets_not_rerun(tmp_path):
  readme = tmp_path / 'README.md'
  readme.write_text(f'intro\n{compare.BEGIN}\n{compare.END}\nrest\n')
  compare.write_blocks(str(readme), {'toy': 'toy table v1\n'})
  compare.write_blocks(str(readme), {'digits': 'digits table\n'})
  compare.write_blocks(str(readme), {'toy': 'toy table v2\n'})
  text = readme.read_text()
  assert text.startswith('intro\n') and text.endswith(f'{compare.END}\nrest\n')
  assert 'toy table v1' not in text and text.index('toy table v2') < text.index('digits table')
  assert text.count('<!-- comparison toy: begin -->') == 1 and text.count('<!-- comparison digits: end -->') == 1


def test_the_header_gives_the_runs_own_time_when_they_are_read_back():
  records = [{'kind': 'run', 'train_s': 100.0, 'eval_s': 20.0, 'commit': 'abc1234'},
             {'kind': 'pairs', 'seconds': 60.0, 'commit': 'abc1234'}]
  text = compare.header(records, 500, '2026-12-03', 'def5678')
  assert '2 runs and pair sets, 3 min of training and evaluation' in text
  assert 'trained at commit abc1234' in text and 'commit def5678' in text


def test_a_short_budget_caps_the_ema_so_the_start_no_longer_dominates_it():
  from fewstep_jax import config_base
  config = config_base.load_config(str(REPO / 'configs/digits/edm.py'), {})
  assert tuple(config.optim.ema_rates) == (0.999,) and config.eval.params == 'ema_0.999'
  assert compare.fit_ema(config, 500) == {'ema_0.999': 'ema_0.994'}
  assert tuple(config.optim.ema_rates) == (0.994,) and config.eval.params == 'ema_0.994'
  assert 0.994 ** 500 <= compare.EMA_START_SHARE < 0.995 ** 500
  long = config_base.load_config(str(REPO / 'configs/toy/edm.py'), {})
  assert compare.fit_ema(long, 3000) == {} and long.eval.params == 'ema_0.999'  # 0.999 ** 3000 = 0.0497.
  # A student updated every 5th step moves its EMA 600 times in 3000 steps: 0.999 ** 600 = 55% of its start.
  dmd2 = config_base.load_config(str(REPO / 'configs/toy/dmd2.py'), {})
  assert dmd2.method.student_every == 5
  assert compare.fit_ema(dmd2, 3000) == {'ema_0.999': 'ema_0.995'} and dmd2.eval.params == 'ema_0.995'
  assert 0.995 ** 600 <= compare.EMA_START_SHARE


def test_own_budget_blocks_go_to_docs_comparison_with_figures_linked_from_there():
  """Equal-budget tables stay in README.md; --budget=own's go to docs/comparison.md, each image path relative to its
  page, and both pages carry the markers write_blocks needs."""
  assert compare.page_for(3000) == compare.README and compare.page_for(compare.OWN) == compare.OWN_PAGE
  assert '](docs/comparison_toy.png)' in compare.figure_line('toy', compare.README)
  assert '](comparison_toy_own.png)' in compare.figure_line('toy_own', compare.OWN_PAGE)
  for page in (compare.README, compare.OWN_PAGE):
    text = open(page).read()
    assert compare.BEGIN in text and compare.END in text, page
