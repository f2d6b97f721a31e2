"""The Apache Beam pipeline (DirectRunner) writes the same bytes as the local runner."""

import json

import pytest

beam = pytest.importorskip("apache_beam")

from test_curation_runner import mid_size_inputs, output_files, pages, write_jsonl  # noqa: E402

from t5x_lite import cli  # noqa: E402
from t5x_lite.curation import beam as curation_beam  # noqa: E402
from t5x_lite.curation import runner, settings  # noqa: E402


def test_direct_runner_equals_local_runner(tmp_path):
  inputs = mid_size_inputs(tmp_path, files=3, per_file=120)
  (inputs / "empty.jsonl").write_bytes(b"")  # a file that keeps nothing still gets its entry
  config = settings.load("curate.py:web_en", [("runner.progress", "false")])
  local = runner.curate([str(inputs / "*.jsonl")], str(tmp_path / "local"), config, workers=1)
  # The Beam run as a user starts it: the CLI with --runner beam (DirectRunner by default).
  code = cli.main(
    [
      "curate",
      "--runner",
      "beam",
      "--input",
      str(inputs / "*.jsonl"),
      "--out",
      str(tmp_path / "beam"),
      "--config.runner.progress=false",
    ]
  )
  assert code == 0
  assert local == json.loads((tmp_path / "beam" / "manifest.json").read_text())
  a, b = output_files(tmp_path / "local"), output_files(tmp_path / "beam")
  assert sorted(a) == sorted(b)
  assert [k for k in a if a[k] != b[k]] == []
  report = json.loads(a["report.json"])
  assert report["removed"]["exact_dedup"] > 0 and report["removed"]["near_dedup"] > 0


def test_direct_runner_with_a_reference_corpus(tmp_path):
  first = tmp_path / "in1"
  first.mkdir()
  write_jsonl(first / "a.jsonl", pages(150, 31))
  config = settings.load("curate.py:web_en", [("runner.progress", "false")])
  runner.curate([str(first / "*.jsonl")], str(tmp_path / "ref"), config, workers=1)
  second = tmp_path / "in2"
  second.mkdir()
  write_jsonl(second / "b.jsonl", pages(150, 31)[:50] + pages(100, 32))
  config = settings.load(
    "curate.py:web_en", [("runner.progress", "false"), ("dedup.reference", str(tmp_path / "ref"))]
  )
  local = runner.curate([str(second / "*.jsonl")], str(tmp_path / "local"), config, workers=1)
  beamed = curation_beam.curate([str(second / "*.jsonl")], str(tmp_path / "beam"), config)
  assert local == beamed
  assert output_files(tmp_path / "local") == output_files(tmp_path / "beam")
  report = json.loads((tmp_path / "local" / "report.json").read_text())
  assert report["removed"]["exact_dedup"] >= 30  # the pages the reference already holds
