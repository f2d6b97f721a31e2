"""The layers of t5x_lite and the import rules between them (docs/architecture.md), checked by an
AST walk of the package (no import is executed), and drawn as a Graphviz graph.

  python tools/layers.py                       # print violations (exit 1 if any)
  python tools/layers.py --dot docs/layers.dot # the module graph, one box per layer
  dot -Tsvg docs/layers.dot -o docs/layers.svg

Rules (tests/test_layering.py runs `violations()`):
  1. a module imports only from its own layer or lower ones (LAYERS), and the module-level
     import graph has no cycle;
  2. no function-level import of a t5x_lite module outside `cli.py` and `t5x_lite/__init__.py`
     (function-level imports are for optional third-party packages only);
  3. no `_private` name of another t5x_lite module is imported or used (`module._name`), in the
     package or in tools/;
  4. family names appear only in models/, configs/, config.py, convert/ and the task helpers'
     `family=` argument (data/tasks/): nothing else reads `.family` or spells 'encoder_decoder'.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import os
import sys
from collections.abc import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "t5x_lite"

# (layer, module patterns): a module is in the first layer with a matching pattern.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
  (
    "L0 leaves",
    (
      "t5x_lite.errors",
      "t5x_lite.configs",
      "t5x_lite.partitioning",
      "t5x_lite.runtime",
      "t5x_lite.reporting",
      "t5x_lite.models.config",
      "t5x_lite.training.distill_config",
      "t5x_lite.data",
      "t5x_lite.data.ragged",
      "t5x_lite.data.keys",
      "t5x_lite.data.task_metrics",
      "t5x_lite.evaluation",
      "t5x_lite.convert",
      "t5x_lite.training",
      "t5x_lite.curation",
    ),
  ),
  ("L1 config + data", ("t5x_lite.config", "t5x_lite.configs.*", "t5x_lite.data.*")),
  ("L2 models", ("t5x_lite.models", "t5x_lite.models.*")),
  (
    "L3 core",
    (
      "t5x_lite.checkpoints",
      "t5x_lite.decoding",
      "t5x_lite.training.optimizers",
      "t5x_lite.training.state",
      "t5x_lite.training.step",
      "t5x_lite.training.distill",
      "t5x_lite.training.init_from",
      "t5x_lite.training.preemption",
      "t5x_lite.training.branch",
      "t5x_lite.training.observability",
      "t5x_lite.training.memory",
    ),
  ),
  (
    "L4 run setup",
    (
      "t5x_lite.training.setup",
      "t5x_lite.training.hooks",
      "t5x_lite.evaluation.evaluator",
      "t5x_lite.evaluation.bits_per_byte",
    ),
  ),
  (
    "L5 apps",
    (
      "t5x_lite.training.loop",
      "t5x_lite.evaluation.checkpoint",
      "t5x_lite.inference",
      "t5x_lite.convert.*",
      "t5x_lite.curation.*",
      "t5x_lite.evaluation.harness",
      "t5x_lite.evaluation.lm_eval_adapter",
    ),
  ),
  (
    "L6 entry points",
    ("t5x_lite.cli", "t5x_lite.launch", "t5x_lite", "t5x_lite.scaling", "t5x_lite.scaling.*"),
  ),
)
# The command-line modules may import lazily: `curation.cli` reaches `curation.beam`, which needs the
# optional apache-beam, only when `--runner beam` is asked for.
LAZY_IMPORTS_ALLOWED = ("t5x_lite.cli", "t5x_lite", "t5x_lite.curation.cli", "t5x_lite.scaling.cli")
# The families' own code, configs and their validation, the HF mappings, and the fine-tuning task
# helpers (whose `family=` argument says which model a task's text is framed for), and the scaling
# planner (which builds the shipped config of the family it is asked to plan).
FAMILY_NAMES_ALLOWED = (
  "t5x_lite.scaling*",
  "t5x_lite.models*",
  "t5x_lite.configs*",
  "t5x_lite.config",
  "t5x_lite.convert*",
  "t5x_lite.data.tasks.*",
)


def layer_of(module: str) -> int:
  for index, (_, patterns) in enumerate(LAYERS):
    if any(fnmatch.fnmatchcase(module, p) for p in patterns):
      return index
  raise KeyError(f"{module} is in no layer of tools/layers.py LAYERS: add it")


def modules(root: str = ROOT) -> dict[str, str]:
  """{module name: path} of every .py file of the package under `root`."""
  found = {}
  for directory, _, files in os.walk(os.path.join(root, PACKAGE)):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        parts = os.path.relpath(path, root)[: -len(".py")].split(os.sep)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return found


def _imports(
  tree: ast.AST, known: dict[str, str], here: str
) -> Iterator[tuple[ast.AST, str, str, bool]]:
  """(node, imported module, imported name or '', inside a function?) for t5x_lite imports."""

  def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.AST, str, str, bool]]:
    for child in ast.iter_child_nodes(node):
      nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
      if isinstance(child, ast.Import):
        for alias in child.names:
          if alias.name.split(".")[0] == PACKAGE:
            yield child, alias.name, "", in_function
      elif isinstance(child, ast.ImportFrom) and child.module:
        base = child.module
        if child.level:  # relative: resolve against this module's package
          package = here if known.get(here, "").endswith("__init__.py") else here.rsplit(".", 1)[0]
          base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + [base])
        if base.split(".")[0] != PACKAGE:
          continue
        for alias in child.names:
          submodule = f"{base}.{alias.name}"
          if submodule in known:
            yield child, submodule, "", in_function
          else:
            yield child, base, alias.name, in_function
      yield from visit(child, nested)

  yield from visit(tree, False)


def import_graph(root: str = ROOT, lazy: bool = False) -> dict[str, set[str]]:
  """{module: modules it imports at module level} (or, with lazy=True, inside functions)."""
  known = modules(root)
  graph = {}
  for module, path in known.items():
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    graph[module] = {
      m for _, m, _, late in _imports(tree, known, module) if late == lazy and m != module
    }
  return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle of the graph (module-level imports; a package's __init__ importing its own
  submodules is a facade, not a cycle), or None."""
  state: dict[str, int] = {}
  stack: list[str] = []

  def edges(module: str) -> set[str]:
    return {m for m in graph.get(module, ()) if not m.startswith(module + ".")}

  def visit(module: str) -> list[str] | None:
    state[module] = 1
    stack.append(module)
    for target in sorted(edges(module)):
      if state.get(target) == 1:
        return stack[stack.index(target) :] + [target]
      if target not in state:
        found = visit(target)
        if found:
          return found
    stack.pop()
    state[module] = 2
    return None

  for module in sorted(graph):
    if module not in state:
      found = visit(module)
      if found:
        return found
  return None


def _private_uses(tree: ast.AST, known: dict[str, str], here: str, where: str) -> Iterator[str]:
  """`from t5x_lite.x import _name` and `x._name` on an imported t5x_lite module."""
  aliases = {}
  for node, module, name, _ in _imports(tree, known, here):
    if name.startswith("_") and not name.startswith("__") and module != here:
      yield f"{where}:{node.lineno}: imports private {module}.{name}"
    if not name:
      for alias in node.names:
        local = alias.asname or alias.name.split(".")[-1]
        if module.endswith(alias.name.split(".")[-1]) or alias.asname:
          aliases[local] = module
  for node in ast.walk(tree):
    if (
      isinstance(node, ast.Attribute)
      and isinstance(node.value, ast.Name)
      and node.value.id in aliases
      and node.attr.startswith("_")
      and not node.attr.startswith("__")
    ):
      yield f"{where}:{node.lineno}: uses private {aliases[node.value.id]}.{node.attr}"


def violations(root: str = ROOT, tools_dir: str | None = None) -> list[str]:
  """Every broken rule, one line each: `file:line: what`."""
  known = modules(root)
  problems = []
  for module, path in sorted(known.items()):
    where = os.path.relpath(path, root)
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    try:
      mine = layer_of(module)
    except KeyError as e:
      problems.append(f"{where}: {e.args[0]}")
      continue
    for node, target, _, lazy in _imports(tree, known, module):
      if lazy and module not in LAZY_IMPORTS_ALLOWED:
        problems.append(f"{where}:{node.lineno}: function-level import of {target}")
      if target == module or target not in known:
        continue
      theirs = layer_of(target)
      if theirs > mine:
        problems.append(
          f"{where}:{node.lineno}: {module} ({LAYERS[mine][0]}) imports {target} "
          f"({LAYERS[theirs][0]}): imports must point down"
        )
    problems += _private_uses(tree, known, module, where)
    if not any(fnmatch.fnmatchcase(module, p) for p in FAMILY_NAMES_ALLOWED):
      for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "family":
          problems.append(f"{where}:{node.lineno}: reads .family outside models/ and configs")
        if isinstance(node, ast.Constant) and node.value == "encoder_decoder":
          problems.append(f"{where}:{node.lineno}: names the family 'encoder_decoder'")
  cycle = _cycle(import_graph(root))
  if cycle:
    problems.append("import cycle: " + " -> ".join(cycle))
  for name in sorted(os.listdir(tools_dir)) if tools_dir else ():
    if name.endswith(".py"):
      path = os.path.join(tools_dir, name)
      tree = ast.parse(open(path, encoding="utf-8").read(), path)
      problems += _private_uses(tree, known, "tools." + name[:-3], os.path.relpath(path, root))
  return problems


def dot(root: str = ROOT) -> str:
  """The layers (top: entry points) with their modules, and which layer imports which (edge
  labels: how many module-level imports; dashed: only inside the CLI's commands), generated
  from the code."""
  graph = import_graph(root)
  members: dict[int, list[str]] = {}
  for module in graph:
    members.setdefault(layer_of(module), []).append(module.removeprefix("t5x_lite.") or "t5x_lite")
  counts: dict[tuple[int, int], int] = {}
  for module, targets in graph.items():
    for target in targets:
      if target in graph and layer_of(target) != layer_of(module):
        key = (layer_of(module), layer_of(target))
        counts[key] = counts.get(key, 0) + 1
  lines = [
    "digraph t5x_lite_layers {",
    "  rankdir=TB; nodesep=0.3; ranksep=0.45;",
    '  node [shape=box, style="rounded,filled", fillcolor="#f4f6fb", fontname="Helvetica", fontsize=10];',
    '  edge [color="#55555588", fontname="Helvetica", fontsize=8, arrowsize=0.6];',
  ]
  for index in sorted(members, reverse=True):
    names = sorted(members[index])
    rows, row = [], []
    for name in names:  # wrap the module list at ~70 characters
      if row and len(", ".join(row + [name])) > 70:
        rows.append(", ".join(row))
        row = []
      row.append(name)
    rows.append(", ".join(row))
    body = "\\n".join(rows)
    lines.append(f'  L{index} [label="{LAYERS[index][0]}\\n\\n{body}"];')
  for (source, target), count in sorted(counts.items()):
    lines.append(f'  L{source} -> L{target} [label="{count}"];')
  late = {  # the entry points import the layers below when a command runs
    (layer_of(module), layer_of(target))
    for module, targets in import_graph(root, lazy=True).items()
    for target in targets
    if target in graph and layer_of(target) != layer_of(module)
  }
  for source, target in sorted(late - set(counts)):
    lines.append(f"  L{source} -> L{target} [style=dashed];")
  lines.append("}")
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dot", help="write the Graphviz graph here")
  args = parser.parse_args(argv)
  if args.dot:
    with open(args.dot, "w", encoding="utf-8") as f:
      f.write(dot())
  problems = violations(tools_dir=os.path.join(ROOT, "tools"))
  print("\n".join(problems) or "layering: no violation")
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main())
