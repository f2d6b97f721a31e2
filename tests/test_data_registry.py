"""Registry errors, registry files, and every document source (on small files made here)."""

import gzip
import json

import numpy as np
import pytest

from t5x_lite.data import DataError, pipeline, preprocessors, registry, sources
from t5x_lite.data.registry import (
  Feature,
  Mixture,
  MixtureRegistry,
  RegistryError,
  Task,
  TaskRegistry,
)


def _task(name, **overrides):
  arguments = dict(
    source=sources.InMemorySource(["a b c"] * 20),
    preprocessors=[preprocessors.tokenize],
    output_features={"targets": Feature()},
  )
  arguments.update(overrides)
  return Task(name, **arguments)


@pytest.fixture
def clean_registry():
  names = []
  yield names
  for name in names:
    TaskRegistry.remove(name)
    MixtureRegistry.remove(name)


def test_builtin_tasks_registered():
  pipeline.import_tasks()
  for name in ("pydoc_causal_lm", "pydoc_mlm", "pydoc_span_corruption", "pydoc_prefix_lm"):
    assert name in TaskRegistry.names()
  assert {"c4_span_corruption", "wikipedia_causal_lm"} <= set(TaskRegistry.names())


def test_duplicate_and_unknown_names(clean_registry):
  clean_registry.append("test_dup_task")
  TaskRegistry.add(_task("test_dup_task"))
  with pytest.raises(RegistryError, match="'test_dup_task' is already registered"):
    TaskRegistry.add(_task("test_dup_task"))
  with pytest.raises(RegistryError, match="did you mean 'pydoc_causal_lm'"):
    registry.get_task_or_mixture("pydoc_causal_l")
  with pytest.raises(RegistryError, match="no Task or Mixture named 'zzzz'"):
    TaskRegistry.get("zzzz")
  with pytest.raises(RegistryError, match="did you mean 'pydoc_mlm'"):
    MixtureRegistry.add(Mixture("test_bad_mix", ["pydoc_mlmm"], default_rate=1.0))


def test_bad_specs_are_named():
  with pytest.raises(RegistryError, match=r"output_features\['targets'\] must be a Feature"):
    _task("t", output_features={"targets": "sentencepiece"})
  with pytest.raises(RegistryError, match="'labels' is not a task feature"):
    _task("t", output_features={"labels": Feature()})
  with pytest.raises(RegistryError, match="non-empty dict"):
    _task("t", output_features={})
  with pytest.raises(RegistryError, match="source must be a DocumentSource"):
    _task("t", source=["a", "b"])
  with pytest.raises(RegistryError, match=r"preprocessors\[1\]"):
    _task("t", preprocessors=[preprocessors.tokenize, "trim"])
  with pytest.raises(RegistryError, match="exactly one of rates= or default_rate="):
    Mixture("m", ["pydoc_mlm"])
  with pytest.raises(RegistryError, match="needs a positive rate"):
    Mixture("m", ["pydoc_mlm", "pydoc_causal_lm"], rates={"pydoc_mlm": 1.0})


def test_registry_file_by_path(tmp_path, clean_registry):
  clean_registry.append("test_file_task")
  path = tmp_path / "my_registry.py"
  path.write_text(
    "from t5x_lite.data import preprocessors, sources\n"
    "from t5x_lite.data.registry import Feature, Task, TaskRegistry\n"
    "TaskRegistry.add(Task('test_file_task', sources.InMemorySource(['x'] * 30),\n"
    "                      [preprocessors.tokenize], {'targets': Feature()}))\n"
  )
  registry.import_task_modules([str(path)])
  registry.import_task_modules([str(path)])  # a second import is a no-op, not a duplicate
  assert "test_file_task" in TaskRegistry
  with pytest.raises(FileNotFoundError, match="does not exist"):
    registry.import_task_modules([str(tmp_path / "missing.py")])
  with pytest.raises(RegistryError, match="cannot import 'no_such_module_xyz'"):
    registry.import_task_modules(["no_such_module_xyz"])


def _all(split):
  return [split[i] for i in range(len(split))]


def test_a_single_document_always_trains():
  # '/data/corpus9.txt' hashes below 0.05: by the hash alone it would be validation's only
  # document and leave train empty (a one-file corpus failing on 5% of paths).
  assert not sources.validation_mask(["/data/corpus9.txt"], 0.05).any()
  assert [not sources.validation_mask([f"/data/corpus{i}.txt"], 0.5)[0] for i in range(20)] == [
    True
  ] * 20


def test_hash_split_is_stable_and_disjoint():
  ids = [f"doc{i}" for i in range(2000)]
  mask = sources.validation_mask(ids, 0.1)
  assert 0.08 < mask.mean() < 0.12
  np.testing.assert_array_equal(mask, sources.validation_mask(list(reversed(ids)), 0.1)[::-1])
  source = sources.InMemorySource([f"text {i}" for i in range(2000)], validation_fraction=0.1)
  train, validation = _all(source.split("train")), _all(source.split("validation"))
  assert len(train) + len(validation) == 2000
  assert {d["id"] for d in validation} == {i for i, m in zip(ids, mask) if m}


def test_text_file_modes_and_globs(tmp_path):
  (tmp_path / "a.txt").write_text("first line\nsecond line\n\nthird para\n")
  with gzip.open(tmp_path / "b.txt.gz", "wt") as f:
    f.write("gz line one\n\ngz para two\n")
  pattern = str(tmp_path / "*.txt*")
  per_file = sources.TextFileSource(pattern, mode="file", validation_fraction=0.01)
  everything = lambda s: sorted(  # noqa: E731
    d["text"] for name in ("train", "validation") for d in _try_split(s, name)
  )
  assert everything(per_file) == [
    "first line\nsecond line\n\nthird para\n",
    "gz line one\n\ngz para two\n",
  ]
  lines = sources.TextFileSource(pattern, mode="line")
  assert everything(lines) == sorted(
    ["first line", "second line", "third para", "gz line one", "gz para two"]
  )
  paragraphs = sources.TextFileSource(pattern, mode="paragraph")
  assert everything(paragraphs) == sorted(
    ["first line\nsecond line", "third para", "gz line one", "gz para two"]
  )
  with pytest.raises(FileNotFoundError, match="no files match"):
    sources.TextFileSource(str(tmp_path / "*.none"))
  with pytest.raises(ValueError, match="mode='sentence'"):
    sources.TextFileSource(pattern, mode="sentence")


def _try_split(source, name):
  try:
    return _all(source.split(name))
  except ValueError:  # a tiny corpus may have an empty split
    return []


def test_jsonl_gzip(tmp_path):
  records = [{"id": f"r{i}", "body": f"record {i}"} for i in range(50)]
  with gzip.open(tmp_path / "data.jsonl.gz", "wt") as f:
    f.write("\n".join(json.dumps(r) for r in records) + "\n")
  source = sources.JsonlSource(str(tmp_path / "*.jsonl.gz"), text_field="body", id_field="id")
  documents = _all(source.split("train")) + _all(source.split("validation"))
  assert sorted(d["text"] for d in documents) == sorted(r["body"] for r in records)
  assert {d["id"] for d in documents} == {r["id"] for r in records}
  with pytest.raises(DataError, match="no field 'text'"):
    sources.JsonlSource(str(tmp_path / "*.jsonl.gz")).split("train")


def test_array_record(tmp_path):
  from array_record.python import array_record_module

  for shard in range(2):
    writer = array_record_module.ArrayRecordWriter(
      str(tmp_path / f"data-{shard}.array_record"), "group_size:1"
    )
    for i in range(20):
      writer.write(json.dumps({"text": f"shard {shard} doc {i}"}).encode())
    writer.close()
  source = sources.ArrayRecordSource(
    str(tmp_path / "*.array_record"), record_format="json", validation_fraction=0.2
  )
  documents = _all(source.split("train")) + _all(source.split("validation"))
  assert sorted(d["text"] for d in documents) == sorted(
    f"shard {s} doc {i}" for s in range(2) for i in range(20)
  )
  assert 0 < len(source.split("validation")) < 20


class _FakeTfdsSplit:
  """Stands in for `tfds.data_source(...)`: random access to dict records with bytes text."""

  def __init__(self, texts):
    self.texts = texts

  def __len__(self):
    return len(self.texts)

  def __getitem__(self, index):
    return {"text": self.texts[index].encode(), "title": b"t"}


def test_tfds_adapter_with_a_fake_data_source():
  # tensorflow-datasets is not installed here: the adapter is tested against a fake
  # `data_source_fn` with the same contract (name, split, data_dir) -> random-access records.
  opened = []
  splits = {"train": [f"train {i}" for i in range(30)], "validation": ["val 0", "val 1"]}

  def data_source(name, split, data_dir):
    opened.append((name, split, data_dir))
    if split not in splits:
      raise ValueError(f"unknown split {split}")
    return _FakeTfdsSplit(splits[split])

  source = sources.TfdsSource("fake/ds", data_dir="/d", data_source_fn=data_source)
  assert [d["text"] for d in _all(source.split("validation"))] == ["val 0", "val 1"]
  assert len(source.split("train")) == 30
  assert ("fake/ds", "validation", "/d") in opened
  # No validation split in TFDS: carved out of train by hash, disjoint and complete.
  del splits["validation"]
  hashed = sources.TfdsSource("fake/ds", data_source_fn=data_source, validation_fraction=0.2)
  train, validation = _all(hashed.split("train")), _all(hashed.split("validation"))
  assert sorted(d["text"] for d in train + validation) == sorted(splits["train"])
  assert validation and train


def test_tfds_source_on_a_tiny_prepared_dataset(tmp_path):
  # Runs where the 'tfds' extra is installed (tensorflow-datasets, which works without
  # TensorFlow): builds a two-split ArrayRecord dataset and reads it with tfds.data_source.
  tfds = pytest.importorskip("tensorflow_datasets")
  tfds.disable_progress_bar()

  class T5xLiteTinyText(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      features = tfds.features.FeaturesDict({"text": tfds.features.Text()})
      return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {
        "train": self._generate_examples(20, "doc"),
        "validation": self._generate_examples(3, "val"),
      }

    def _generate_examples(self, count, prefix):
      for i in range(count):
        yield f"{prefix}{i}", {"text": f"{prefix} number {i}"}

  T5xLiteTinyText(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  source = sources.TfdsSource("t5x_lite_tiny_text", data_dir=str(tmp_path))
  assert sorted(d["text"] for d in _all(source.split("train"))) == sorted(
    f"doc number {i}" for i in range(20)
  )
  assert sorted(d["text"] for d in _all(source.split("validation"))) == [
    f"val number {i}" for i in range(3)
  ]


def test_empty_and_tiny_corpora(tmp_path):
  (tmp_path / "empty.txt").write_text("")
  empty = sources.TextFileSource(str(tmp_path / "*.txt"), mode="file")
  with pytest.raises(DataError, match="has no documents"):
    empty.split("train")
  (tmp_path / "empty.jsonl").write_text("\n")
  with pytest.raises(DataError, match="has no documents"):
    sources.JsonlSource(str(tmp_path / "*.jsonl")).split("train")
  # Two documents: the hash split still leaves one in each split.
  two = sources.InMemorySource(["first", "second"], validation_fraction=0.01)
  assert len(two.split("train")) == 1 and len(two.split("validation")) == 1
