"""The package's structure: no import circle (counting imports inside functions, which hide one from Python), the
networks below the training code, and method classes at most three deep below their kind."""
import ast
import pathlib

from conftest import REPO

PACKAGE = REPO / 'fewstep_jax'


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def import_graph() -> dict:
  """module -> the package modules it imports anywhere in its file (top level or inside functions)."""
  modules = {module_name(path): path for path in PACKAGE.rglob('*.py')}
  graph = {}
  for name, path in modules.items():
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
      targets = []
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        # `from package import submodule` needs the submodule; `from module import name` the module.
        submodules = [f'{node.module}.{alias.name}' for alias in node.names if f'{node.module}.{alias.name}' in modules]
        targets = submodules if len(submodules) == len(node.names) else [node.module] + submodules
      imported.update(target for target in targets if target in modules and target != name)
    graph[name] = imported
  return graph


def find_cycle(graph: dict):
  """A list of modules forming an import cycle, or None."""
  state = {}

  def visit(node, stack):
    state[node] = 'open'
    for child in sorted(graph[node]):
      if state.get(child) == 'open':
        return stack[stack.index(child):] + [child]
      if child not in state:
        cycle = visit(child, stack + [child])
        if cycle:
          return cycle
    state[node] = 'done'
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node, [node])
      if cycle:
        return cycle
  return None


def test_the_package_has_no_import_circle():
  graph = import_graph()
  assert find_cycle(graph) is None, find_cycle(graph)
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']  # The check can fail.


def test_networks_and_paths_do_not_depend_on_training_or_methods():
  graph = import_graph()
  for name, imported in graph.items():
    if name.startswith(('fewstep_jax.nn', 'fewstep_jax.kernels')) or name == 'fewstep_jax.paths':
      assert not {m for m in imported if m.startswith(('fewstep_jax.train', 'fewstep_jax.methods'))}, name


def test_method_classes_are_at_most_three_deep_below_their_kind():
  """Every registered method is at most three classes below its kind, SingleNetworkMethod or MultiNetworkMethod
  (f-distill: FDistill -> DistributionMatching -> ScoreDistillation); mixins (ConsistencySampled) are no level. A
  method that trains nothing (a teacher's sampler) has no network of its own: it is a Method directly."""
  from fewstep_jax.methods import METHODS
  from fewstep_jax.methods.base import Method, SingleNetworkMethod
  from fewstep_jax.methods.roles import MultiNetworkMethod
  for name, (cls, _) in METHODS.items():
    if not cls.trains:
      assert cls.__bases__ == (Method,), name
      continue
    kind = next(k for k in (SingleNetworkMethod, MultiNetworkMethod) if issubclass(cls, k))
    below = [c for c in cls.__mro__[:cls.__mro__.index(kind)] if issubclass(c, kind)]
    assert len(below) <= 3, (name, [c.__name__ for c in below])


def test_compile_cache_points_jax_at_its_directory_and_never_fails_a_run(tmp_path, capsys):
  import jax
  from fewstep_jax import compile_cache
  before = jax.config.jax_compilation_cache_dir
  try:
    assert compile_cache.enable('') is None
    assert jax.config.jax_compilation_cache_dir == before
    blocked = tmp_path / 'a_file'
    blocked.write_text('')
    assert compile_cache.enable(str(blocked / 'cache')) is None
    assert 'no compilation cache' in capsys.readouterr().out
    assert compile_cache.enable(str(tmp_path / 'cache')) == str(tmp_path / 'cache')
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'cache')
  finally:
    jax.config.update('jax_compilation_cache_dir', before)


def test_importing_the_package_starts_no_jax_backend():
  """A module-level jax array would start the XLA backend at import, before a multi-host run's
  jax.distributed.initialize (which must come first): every module imports without one."""
  import subprocess
  import sys
  modules = sorted(name for name in import_graph() if not name.endswith('__main__'))
  code = ('import importlib\nfrom jax._src import xla_bridge\n'
          + ''.join(f'importlib.import_module({name!r})\n' for name in modules)
          + 'assert not xla_bridge.backends_are_initialized(), "a module started the backend"\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]


def test_nothing_the_methods_stand_on_imports_upward():
  """The modules the methods import (directly or not: train/, nn/, data/, the maths) import neither a method nor
  anything that stands on the methods (the trainer, runs, eval, tools, main): no arrow runs upward."""
  graph = import_graph()
  methods = {name for name in graph if name.startswith('fewstep_jax.methods')}

  def reach(start, edges):
    seen, stack = set(), list(start)
    while stack:
      for child in edges(stack.pop()):
        if child not in seen:
          seen.add(child)
          stack.append(child)
    return seen

  below = reach(methods, lambda name: graph[name]) - methods
  importers = {name: {m for m, deps in graph.items() if name in deps} for name in graph}
  above = reach(methods, lambda name: importers[name]) | methods
  # A folder (train/, nn/, data/) is one floor: all its modules count as below where one of them is.
  folder = lambda name: name.rsplit('.', 1)[0] if name.count('.') > 1 else name
  floors = {folder(name) for name in below}
  below |= {name for name in graph if folder(name) in floors and not name.startswith('fewstep_jax.methods')}
  upward = sorted((low, high) for low in below for high in graph[low] & above)
  assert not upward, upward
  assert 'fewstep_jax.train.state' in below and 'fewstep_jax.trainer' in above
