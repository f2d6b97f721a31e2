"""The import rules of docs/architecture.md hold (tools/layers.py walks the AST), and the checker
catches each kind of violation when one is planted in a copy of the package."""

import importlib.util
import os
import shutil

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def layers():
  spec = importlib.util.spec_from_file_location("layers", os.path.join(REPO, "tools", "layers.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_package_follows_the_import_rules(layers):
  assert layers.violations(tools_dir=os.path.join(REPO, "tools")) == []


def test_every_module_has_a_layer_and_imports_point_down(layers):
  graph = layers.import_graph()
  assert {"t5x_lite.training.setup", "t5x_lite.data.objectives", "t5x_lite.cli"} <= set(graph)
  for module, targets in graph.items():
    for target in targets:
      if target in graph:
        assert layers.layer_of(target) <= layers.layer_of(module), (module, target)
  # The two cycles of the first version are gone: decoding no longer imports the app above it,
  # and the registry no longer imports the task definitions.
  assert "t5x_lite.inference" not in graph["t5x_lite.decoding"]
  assert not any(m.startswith("t5x_lite.data.tasks") for m in graph["t5x_lite.data.registry"])


def test_planted_violations_are_reported(layers, tmp_path):
  shutil.copytree(os.path.join(REPO, "t5x_lite"), tmp_path / "t5x_lite")

  def plant(relative: str, line: str, at_end: bool = True) -> None:
    path = tmp_path / "t5x_lite" / relative
    text = path.read_text()
    path.write_text(text + line if at_end else line + text)

  plant("data/ragged.py", "from t5x_lite.training import loop  # noqa\n")  # upward + a cycle
  plant("decoding.py", "\n\ndef f():\n  from t5x_lite import checkpoints\n")  # function-level
  plant("inference.py", "from t5x_lite.data.sources import _Missing  # noqa\n")  # private name
  plant("evaluation/evaluator.py", "\n\ndef g(model):\n  return model.config.family\n")
  problems = layers.violations(root=str(tmp_path))
  text = "\n".join(problems)
  assert (
    "t5x_lite/data/ragged.py:" in text
    and "t5x_lite.data.ragged (L0 leaves) imports t5x_lite.training.loop (L5 apps): imports "
    "must point down"
    in text
  ), text
  assert "t5x_lite/decoding.py:" in text and "function-level import of t5x_lite.checkpoints" in text
  assert "imports private t5x_lite.data.sources._Missing" in text
  assert "t5x_lite/evaluation/evaluator.py:" in text and "reads .family" in text
  assert any(p.startswith("import cycle: ") and "t5x_lite.data.ragged" in p for p in problems)
  assert len(problems) >= 5
