"""kill -9 at random moments (one during an async checkpoint write), then the same command:
final params and every logged loss bit-identical (a small run of tools/kill_resume.py; the
20-trial figure is `python tools/kill_resume.py --trials 20`)."""

import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow  # ~2 training processes per trial


def test_kill_minus_nine_then_rerun_is_bit_identical(tmp_path):
  spec = importlib.util.spec_from_file_location(
    "kill_resume", os.path.join(REPO, "tools", "kill_resume.py")
  )
  tool = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tool)
  out = tmp_path / "result.json"
  # Trials 0-2 hit start-up, a logged step and a checkpoint write (tools/kill_resume.KINDS).
  code = tool.main(["--trials", "3", "--steps", "8", "--seed", "3", "--out", str(out)])
  result = json.loads(out.read_text())
  assert [t["kind"] for t in result["trials"]] == ["startup", "step", "checkpoint"]
  assert code == 0 and result["passed"] == 3, result
