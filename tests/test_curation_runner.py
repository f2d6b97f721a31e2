"""`t5x-lite curate` end to end: every reader, bad input counted and skipped, a bad config fails
before reading, decontamination, determinism across worker counts, resume after kill -9, and
the output directory as a Task source (`tasks show`, training a tiny GPT on it)."""

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from t5x_lite import cli
from t5x_lite.curation import synthetic
from t5x_lite.data.curated_source import CuratedSource

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def write_jsonl(path, records, opener=open):
  with opener(path, "wt", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")


def pages(count, seed):
  return list(synthetic.documents(count, seed=seed))


def clean_page(seed):
  return next(r for r in synthetic.documents(50, seed=seed) if r["kind"] == "clean")


def make_warc(path, pages_html):
  from warcio.statusandheaders import StatusAndHeaders
  from warcio.warcwriter import WARCWriter

  with open(path, "wb") as f:
    writer = WARCWriter(f, gzip=True)
    for url, html in pages_html:
      headers = StatusAndHeaders(
        "200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1"
      )
      record = writer.create_warc_record(
        url, "response", payload=io.BytesIO(html.encode()), http_headers=headers
      )
      writer.write_record(record)
      request = writer.create_warc_record(
        url, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")
      )
      writer.write_record(request)


def html_page(text):
  paragraphs = "".join(f"<p>{line}</p>" for line in text.split("\n"))
  return (
    "<html><head><title>Page</title></head><body><nav><a href='/'>Home</a> | <a>About</a></nav>"
    f"<article>{paragraphs}</article><footer>Copyright 2024 Example Inc.</footer></body></html>"
  )


@pytest.fixture
def mixed_inputs(tmp_path):
  """Every input format, with clean pages, junk, duplicates and broken records."""
  d = tmp_path / "in"
  d.mkdir()
  write_jsonl(d / "a.jsonl", pages(60, 1))
  write_jsonl(d / "b.jsonl.gz", pages(40, 2), opener=gzip.open)
  import pyarrow as pa
  import pyarrow.parquet as pq
  import zstandard

  with open(d / "c.jsonl.zst", "wb") as f:
    f.write(
      zstandard.ZstdCompressor().compress(
        "".join(json.dumps(r) + "\n" for r in pages(40, 3)).encode()
      )
    )
  rows = pages(40, 4)
  pq.write_table(
    pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]}), d / "d.parquet"
  )
  (d / "e.txt").write_text(synthetic.english_page(__import__("random").Random(5)))
  make_warc(
    d / "f.warc.gz",
    [
      (f"https://example.org/{i}", html_page(r["text"]))
      for i, r in enumerate(pages(12, 6))
      if r["kind"] == "clean"
    ],
  )
  (d / "g.html").write_text(html_page(synthetic.english_page(__import__("random").Random(7))))
  # Broken input: each kind once.
  (d / "h_empty.jsonl").write_bytes(b"")
  good = json.dumps(clean_page(8)).encode()
  (d / "i_bad_utf8.jsonl").write_bytes(good + b'\n{"id": "x", "text": "caf\xe9 au lait"}\n')
  full = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in pages(30, 9)))
  (d / "j_truncated.jsonl.gz").write_bytes(full[: len(full) // 2])
  with open(d / "k_huge.jsonl", "wb") as f:  # one 50 MB line, then a good one
    after = json.dumps({**clean_page(10), "id": "after-huge"}).encode()
    f.write(b'{"id": "huge", "text": "' + b"a" * (50 << 20) + b'"}\n' + after + b"\n")
  (d / "l_missing.jsonl").write_text('{"id": "m1", "body": "no text"}\n{"id": "m2"}\nnot json\n')
  return d


def run_cli(capsys, *argv):
  code = cli.main(list(argv))
  captured = capsys.readouterr()
  return code, captured.out + captured.err


def output_files(out):
  """{relative path: bytes} of everything a run leaves (intermediate _work excluded)."""
  files = {}
  for root, dirs, names in os.walk(out):
    dirs[:] = [x for x in dirs if x != "_work"]
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, out)] = f.read()
  return files


def test_every_reader_and_bad_input_counted(capsys, tmp_path, mixed_inputs):
  out = tmp_path / "out"
  code, text = run_cli(
    capsys,
    "curate",
    "--input",
    str(mixed_inputs / "*"),
    "--out",
    str(out),
    "--workers",
    "1",
    "--config.runner.progress=false",
  )
  assert code == 0, text
  report = json.loads((out / "report.json").read_text())
  assert report["bad_input"] == {
    "document_too_long": 1,
    "empty_file": 1,
    "invalid_json": 1,
    "invalid_utf8": 1,
    "missing_text_field": 2,
    "truncated_gzip": 1,
  }
  source = CuratedSource(str(out))
  records = [source.record(i) for i in range(source.num_documents())]
  by_source = {}
  for r in records:
    by_source.setdefault(os.path.basename(r["source"]), []).append(r)
  # Every format contributed clean documents, including what came after the broken records.
  assert set(by_source) >= {
    "a.jsonl",
    "b.jsonl.gz",
    "c.jsonl.zst",
    "d.parquet",
    "e.txt",
    "f.warc.gz",
    "g.html",
    "i_bad_utf8.jsonl",
    "j_truncated.jsonl.gz",
    "k_huge.jsonl",
  }
  assert any(r["id"] == "after-huge" for r in records)
  warc = by_source["f.warc.gz"]
  assert all(
    r["url"].startswith("https://example.org/") and r["id"].startswith("<urn:uuid:") for r in warc
  )
  assert all(
    "Copyright" not in r["text"] and "Home" not in r["text"] for r in warc
  )  # main text only
  # Attributes recorded on every kept document.
  for r in records:
    a = r["attributes"]
    assert a["language"] == "en" and a["language_score"] >= 0.65
    assert a["cluster_size"] >= 1 and a["words"] > 0
  # Every removal has a rule; the funnel adds up.
  funnel = {s["stage"]: s for s in report["funnel"]}
  assert sum(report["removed"].values()) == funnel["read"]["docs_in"] - len(records)
  assert report["totals"]["documents_out"] == len(records) == source.num_documents()
  assert (out / "funnel.png").read_bytes()[:4] == b"\x89PNG"
  assert "| gopher_repetition |" in (out / "report.md").read_text()
  assert not (out / "_work").exists()


def test_bad_config_fails_before_reading_naming_the_field(capsys, tmp_path, mixed_inputs):
  out = tmp_path / "out"
  for override, message in [
    ("--config.dedup.bands=0", "config.dedup.bands=0: expected an int >= 1"),
    ("--config.langid.threshold=1.5", "config.langid.threshold=1.5: expected a number in [0, 1]"),
    ("--config.langid.model=cld9", "config.langid.model='cld9': expected one of"),
    ("--config.dedup.bandz=3", "unknown config key 'dedup.bandz'; did you mean bands?"),
    ("--config.reader.text_mode=page", "config.reader.text_mode='page': expected one of"),
    ("--config.decontamination.tasks=('no_such_task',)", "no Task or Mixture named 'no_such_task'"),
  ]:
    code, text = run_cli(
      capsys, "curate", "--input", str(mixed_inputs / "*"), "--out", str(out), override
    )
    assert code == 2, text
    assert message in text, text
    assert "Traceback" not in text
    assert not (out / "_work" / "units").exists() or not os.listdir(out / "_work" / "units")
  code, text = run_cli(
    capsys, "curate", "--input", str(tmp_path / "nothing*.jsonl"), "--out", str(out)
  )
  assert code == 2 and "no files match" in text


def test_decontamination_removes_planted_overlaps_only(capsys, tmp_path):
  import random

  rng = random.Random(0)
  eval_texts = [" ".join(synthetic.sentence(rng) for _ in range(4)) for _ in range(6)]
  registry_file = tmp_path / "eval_tasks.py"
  registry_file.write_text(
    "from t5x_lite.data import preprocessors\n"
    "from t5x_lite.data.registry import Feature, Task, TaskRegistry\n"
    "from t5x_lite.data.sources import InMemorySource\n"
    f"SOURCE = InMemorySource({eval_texts!r}, validation_fraction=0.5)\n"
    "if 'planted_eval' not in TaskRegistry:\n"
    "  TaskRegistry.add(Task('planted_eval', SOURCE, [preprocessors.tokenize], {'targets': Feature()}))\n"
  )
  sys.path.insert(0, str(tmp_path))
  from t5x_lite.data import registry

  registry.import_task_modules([str(registry_file)])
  source = registry.TaskRegistry.get("planted_eval").source
  validation = [
    source.split("validation")[i]["text"] for i in range(len(source.split("validation")))
  ]
  train = [source.split("train")[i]["text"] for i in range(len(source.split("train")))]
  docs, planted = [], set()
  for i, record in enumerate(r for r in synthetic.documents(200, seed=11) if r["kind"] == "clean"):
    text = record["text"]
    if i % 10 == 0:  # a 13-word window of a validation text, in different case/punctuation
      words = validation[i % len(validation)].split()
      text += "\n" + " ".join(words[3:16]).upper() + "!"
      planted.add(record["id"])
    elif i % 10 == 1:  # only 12 words: not contamination
      text += "\n" + " ".join(validation[i % len(validation)].split()[3:15]) + "."
    elif i % 10 == 2:  # a train-split text: not an eval split
      text += "\n" + train[i % len(train)]
    docs.append({**record, "text": text})
  write_jsonl(tmp_path / "docs.jsonl", docs)
  out = tmp_path / "out"
  code, text = run_cli(
    capsys,
    "curate",
    "--input",
    str(tmp_path / "docs.jsonl"),
    "--out",
    str(out),
    "--workers",
    "1",
    "--config.decontamination.tasks=('planted_eval',)",
    f"--config.decontamination.task_modules=('{registry_file}',)",
    "--config.runner.progress=false",
    "--config.output.examples_per_rule=100",
  )
  assert code == 0, text
  report = json.loads((out / "report.json").read_text())
  removed = {e["id"] for e in report["examples"]["decontamination.ngram"]}
  assert planted and removed == planted
  kept = set((out / "index" / "part-00000.ids").read_text().split())
  assert kept | removed == {d["id"] for d in docs}


def mid_size_inputs(tmp_path, files=6, per_file=250):
  d = tmp_path / "in"
  d.mkdir()
  for k in range(files):
    records = pages(per_file, 100 + k)
    if k == files - 1:  # a near/exact duplicate of an earlier file's pages crosses files
      records += [r for r in pages(per_file, 100)[:30] if r["kind"] == "clean"]
    write_jsonl(d / f"part{k}.jsonl", records)
  return d


def curate_subprocess(inputs, out, *extra):
  return subprocess.Popen(
    [
      sys.executable,
      "-m",
      "t5x_lite.cli",
      "curate",
      "--input",
      str(inputs / "*.jsonl"),
      "--out",
      str(out),
      "--config.runner.progress=false",
      *extra,
    ],
    env=ENV,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


@pytest.mark.slow
def test_deterministic_across_workers_and_resumable_after_kill_9(tmp_path):
  inputs = mid_size_inputs(tmp_path)
  # Reference: two worker processes, uninterrupted.
  reference = tmp_path / "ref"
  proc = curate_subprocess(inputs, reference, "--workers", "2")
  assert proc.wait(timeout=300) == 0, proc.stdout.read()
  # One worker, killed with SIGKILL once some files are done, then rerun with the same command.
  out = tmp_path / "out"
  proc = curate_subprocess(inputs, out, "--workers", "1")
  units = out / "_work" / "units"
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    done = [u for u in os.listdir(units) if not u.endswith(".tmp")] if units.exists() else []
    if len(done) >= 2:
      break
    time.sleep(0.02)
  assert proc.poll() is None, "the run finished before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (out / "manifest.json").exists()
  proc = curate_subprocess(inputs, out, "--workers", "1")
  assert proc.wait(timeout=300) == 0, proc.stdout.read()
  a, b = output_files(reference), output_files(out)
  assert sorted(a) == sorted(b)
  assert [k for k in a if a[k] != b[k]] == []
  # Cross-file duplicates went; a third run of the finished output changes nothing.
  report = json.loads((out / "report.json").read_text())
  assert report["removed"]["exact_dedup"] + report["removed"]["near_dedup"] >= 25
  proc = curate_subprocess(inputs, out, "--workers", "1")
  assert proc.wait(timeout=300) == 0
  assert output_files(out) == a


def test_reference_corpus_dedup(tmp_path):
  inputs = mid_size_inputs(tmp_path, files=2, per_file=150)
  first = tmp_path / "first"
  proc = curate_subprocess(inputs, first, "--workers", "1")
  assert proc.wait(timeout=300) == 0, proc.stdout.read()
  # The same inputs again, against the first corpus: nothing new survives.
  second = tmp_path / "second"
  proc = curate_subprocess(inputs, second, "--workers", "1", f"--config.dedup.reference={first}")
  assert proc.wait(timeout=300) == 0, proc.stdout.read()
  manifest = json.loads((second / "manifest.json").read_text())
  assert manifest["documents"] == 0
  report = json.loads((second / "report.json").read_text())
  first_report = json.loads((first / "report.json").read_text())
  # every document the first run kept is now an exact duplicate of the reference, and so is
  # every exact duplicate the first run removed; near duplicates stay near duplicates
  assert report["removed"]["exact_dedup"] == (
    json.loads((first / "manifest.json").read_text())["documents"]
    + first_report["removed"]["exact_dedup"]
  )
  assert report["removed"]["near_dedup"] == first_report["removed"]["near_dedup"]


def registry_for(tmp_path, out):
  path = tmp_path / "curated_tasks.py"
  path.write_text(
    "from t5x_lite.data import objectives, preprocessors\n"
    "from t5x_lite.data.curated_source import CuratedSource\n"
    "from t5x_lite.data.registry import Feature, Task, TaskRegistry\n"
    "if 'curated_lm' in TaskRegistry:\n"
    "  TaskRegistry.remove('curated_lm')\n"
    f"TaskRegistry.add(Task('curated_lm', CuratedSource({str(out)!r}),\n"
    "  [preprocessors.tokenize, preprocessors.append_eos, objectives.causal_lm],\n"
    "  {'targets': Feature(add_eos=True)}))\n"
  )
  return path


@pytest.mark.slow
def test_curated_dir_is_a_task_source_and_trains_a_tiny_gpt(capsys, tmp_path, shared_vocab_workdir):
  inputs = tmp_path / "in"
  inputs.mkdir()
  write_jsonl(inputs / "web.jsonl", pages(400, 21))
  out = tmp_path / "corpus"
  code, text = run_cli(
    capsys,
    "curate",
    "--input",
    str(inputs / "web.jsonl"),
    "--out",
    str(out),
    "--workers",
    "1",
    "--config.runner.progress=false",
  )
  assert code == 0, text
  source = CuratedSource(str(out))
  n = source.num_documents()
  assert n > 200
  train, validation = source.split("train"), source.split("validation")
  assert len(train) + len(validation) == n and len(validation) > 0
  ids = set((out / "index" / "part-00000.ids").read_text().split())
  assert {train[i]["id"] for i in range(len(train))} <= ids
  registry_file = registry_for(tmp_path, out)
  workdir = shared_vocab_workdir(str(tmp_path / "run"))
  # The session's SentencePiece model (trained on pydoc): the synthetic corpus is too small a
  # vocabulary to train a 1024-piece model on.
  (vocab,) = [
    os.path.join(workdir, "vocab", f)
    for f in os.listdir(os.path.join(workdir, "vocab"))
    if f.endswith(".model")
  ]
  tiny = "gpt.py:tiny"  # a shipped config (t5x_lite/configs/)
  code, text = run_cli(
    capsys,
    "tasks",
    "show",
    "curated_lm",
    "--task-module",
    str(registry_file),
    "--config",
    tiny,
    "--workdir",
    workdir,
    "-n",
    "1",
    f"--config.data.vocab_path={vocab}",
  )
  assert code == 0, text
  assert "CuratedSource" in text or "curated_lm" in text
  # Train a tiny GPT on it for a few steps through the CLI, as a user would.
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "t5x_lite.cli",
      "train",
      "--config",
      tiny,
      "--workdir",
      workdir,
      "--config.data.task=curated_lm",
      f"--config.data.task_modules=('{registry_file}',)",
      f"--config.data.vocab_path={vocab}",
      "--config.train.steps=4",
      "--config.train.batch_size=8",
      "--config.train.eval_every=4",
      "--config.train.eval_steps=1",
      "--config.train.checkpoint_every=4",
      "--config.train.log_every=2",
      "--config.train.sample_prompt=",
    ],
    env=ENV,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert "done: step 4" in result.stdout
  loss = float(result.stdout.split("eval loss ")[1].split(";")[0])
  assert np.isfinite(loss) and loss < np.log(1024) + 1


def test_user_config_file_and_jsonl_output(capsys, tmp_path):
  import shutil as sh

  from t5x_lite.curation import settings

  own = tmp_path / "my_curate.py"
  sh.copy(os.path.join(settings.PACKAGE_CONFIGS, "curate.py"), own)
  inputs = tmp_path / "in"
  inputs.mkdir()
  write_jsonl(inputs / "a.jsonl", pages(80, 41))
  out = tmp_path / "out"
  code, text = run_cli(
    capsys,
    "curate",
    "--input",
    str(inputs / "a.jsonl"),
    "--out",
    str(out),
    "--workers",
    "1",
    "--config",
    f"{own}:code_docs",
    "--config.output.jsonl=true",
    "--config.runner.progress=false",
  )
  assert code == 0, text
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["config"]["variant"] == "code_docs"
  source = CuratedSource(str(out))
  lines = (out / "part-00000.jsonl").read_text(encoding="utf-8").splitlines()
  assert len(lines) == source.num_documents() == manifest["documents"] > 0
  assert [json.loads(line) for line in lines] == [source.record(i) for i in range(len(lines))]
  code, text = run_cli(
    capsys,
    "curate",
    "--input",
    str(inputs / "a.jsonl"),
    "--out",
    str(tmp_path / "o2"),
    "--config",
    "curate.py:web_fr",
  )
  assert code == 2 and "unknown curate variant 'web_fr'" in text
  code, text = run_cli(
    capsys,
    "curate",
    "--input",
    str(inputs / "a.jsonl"),
    "--out",
    str(out),
    "--config.langid.threshold=0.9",
  )
  assert code == 2 and "holds a curated corpus of other inputs/config" in text
