"""The package's import graph, read from the source (nothing is imported): imports point
down (commands -> tools -> run -> model/data -> common) and never in a circle, because a
cycle makes what a module may assume at import time depend on who imported it first."""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'alexnet_jax'
# The floor of each sub-package; the commands (alexnet_jax/*.py) are above them all.
FLOORS = {'common': 0, 'data': 1, 'model': 1, 'run': 2, 'tools': 3}
TOP = max(FLOORS.values()) + 1


def _modules() -> dict[str, str]:
  """Module name -> file, for every module of the package (packages' __init__ left out)."""
  out = {}
  for folder, _, files in os.walk(os.path.join(REPO, PACKAGE)):
    for f in files:
      if f.endswith('.py') and f != '__init__.py':
        path = os.path.join(folder, f)
        out[os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')] = path
  return out


def import_graph() -> dict[str, set[str]]:
  """Module -> the package's modules it imports, at the top or inside a function."""
  modules = _modules()
  graph = {}
  for name, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    targets = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets.update(a.name for a in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        targets.update(f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in modules
                       else node.module for a in node.names)
    graph[name] = {t for t in targets if t in modules and t != name}
  return graph


def floor(module: str) -> int:
  parts = module.split('.')
  return FLOORS[parts[1]] if len(parts) > 2 else TOP


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle as [a, b, ..., a], or None (depth-first search)."""
  state: dict[str, int] = {}            # 1: on the current path, 2: done
  path: list[str] = []

  def visit(m):
    state[m] = 1
    path.append(m)
    for t in sorted(graph[m]):
      if state.get(t) == 1:
        return path[path.index(t):] + [t]
      if t not in state and (cycle := visit(t)):
        return cycle
    state[m] = 2
    path.pop()
    return None

  for m in sorted(graph):
    if m not in state and (cycle := visit(m)):
      return cycle
  return None


def test_the_graph_is_read():
  graph = import_graph()
  assert 'alexnet_jax.common.model_spec' in graph['alexnet_jax.model.nets']
  assert 'alexnet_jax.run.integrity' in graph['alexnet_jax.run.checkpoints']
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': set()}) is None


def test_no_import_cycle():
  assert find_cycle(import_graph()) is None


def test_imports_point_down():
  up = sorted((m, t) for m, targets in import_graph().items() for t in targets
              if floor(t) > floor(m))
  assert up == []


def test_data_sources_do_not_import_preparation():
  assert 'alexnet_jax.data.prepare' not in import_graph()['alexnet_jax.data.sources']
