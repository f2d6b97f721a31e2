"""`t5x-lite tasks show` (issue 14, point 12): read-only, the classifier's converter for a
classification task, and one line for a TFDS dataset that is not prepared."""

import json

import pytest

from t5x_lite import cli
from t5x_lite.data import pipeline, show
from t5x_lite.data.sources import TfdsSource


def _tree(path):
  return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _classification_module(tmp_path, family):
  rows = [{"text": f"review number {i} is {'good' if i % 2 else 'bad'}", "label": "pos"
           if i % 2 else "neg"} for i in range(40)]  # fmt: skip
  (tmp_path / "reviews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  module = tmp_path / f"cls_{family}.py"
  module.write_text(
    "from t5x_lite.data.tasks.finetune import classification_task\n"
    f"classification_task('reviews_{family}', {str(tmp_path / 'reviews.jsonl')!r}, "
    f"labels=['neg', 'pos'], family={family!r})\n"
  )
  return str(module)


@pytest.mark.parametrize("family,stack", [("encoder", "encoder"), ("decoder", "decoder")])
def test_classification_task_shows_the_classifier_converter(capsys, tmp_path, family, stack):
  module = _classification_module(tmp_path, family)
  workdir = tmp_path / "run"
  code = cli.main(
    ["tasks", "show", f"reviews_{family}", "-n", "1", "--task-module", module,
     "--workdir", str(workdir), "--config.data.vocab=byte"]
  )  # fmt: skip
  out = capsys.readouterr().out
  assert code == 0
  converter = f"ClassificationFeatureConverter(stack={stack!r}, head='classification', pack=True)"
  assert f"model features ({converter})" in out
  assert "classification_labels:" in out and "classification_loss_weights:" in out
  # The LM converters' features are not what a classifier reads.
  assert "decoder_loss_weights" not in out if stack == "encoder" else "encoder_" not in out
  if family == "encoder":
    assert "inputs (" in out and "[CLS]review number" in out and "[SEP]" in out
  assert not workdir.exists()


def test_converter_of_every_kind_of_task(tmp_path):
  pipeline.import_tasks((_classification_module(tmp_path, "decoder"),))
  get = pipeline.registry.TaskRegistry.get
  assert repr(show.default_converter(get("reviews_decoder"))) == (
    "ClassificationFeatureConverter(stack='decoder', head='classification', pack=True)"
  )
  assert repr(show.default_converter(get("pydoc_mlm"))) == "EncoderFeatureConverter(pack=True)"
  assert repr(show.default_converter(get("pydoc_span_corruption"), pack=False)) == (
    "EncDecFeatureConverter(pack=False)"
  )
  assert (
    repr(show.default_converter(get("pydoc_causal_lm"))) == "DecoderFeatureConverter(pack=True)"
  )


def test_tasks_show_never_writes_a_vocabulary(capsys, tmp_path):
  """Before: `tasks show` trained a SentencePiece model into runs/<config>/vocab as a side
  effect. Now the workdir (or the default runs/ folder) is left as it was."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "notes.txt").write_text("keep")
  argv = ["tasks", "show", "pydoc_causal_lm", "-n", "1", "--workdir", str(workdir),
          "--config.data.vocab_size=300"]  # fmt: skip
  assert cli.main(argv) == 0
  shown = capsys.readouterr().out
  assert "model features (DecoderFeatureConverter(pack=True))" in shown
  assert _tree(workdir) == ["notes.txt"]


def test_tasks_show_reads_a_cached_vocabulary_and_matches_train(tmp_path):
  """The in-memory vocabulary is the one `train` caches (deterministic), and a cached one is
  read, not retrained."""
  from t5x_lite.config import get_config

  config = get_config("gpt.py:tiny", [("data.vocab_size", "300")])
  unsaved = pipeline.get_vocabulary(config, str(tmp_path / "a"), save=False)
  assert not (tmp_path / "a").exists()
  saved = pipeline.get_vocabulary(config, str(tmp_path / "b"))
  path = pipeline.vocabulary_cache_path(config, str(tmp_path / "b"))
  assert path.startswith(str(tmp_path / "b" / "vocab" / "spm_300_"))
  assert unsaved.model_proto == saved.model_proto
  before = (tmp_path / "b").stat().st_mtime_ns
  again = pipeline.get_vocabulary(config, str(tmp_path / "b"), save=False)
  assert again.model_proto == saved.model_proto
  assert (tmp_path / "b").stat().st_mtime_ns == before


def test_tfds_not_prepared_is_one_line(capsys, tmp_path):
  data_dir = tmp_path / "tfds"
  data_dir.mkdir()
  module = tmp_path / "c4_here.py"
  module.write_text(
    "from t5x_lite.data import objectives, preprocessors\n"
    "from t5x_lite.data.registry import Feature, Task, TaskRegistry\n"
    "from t5x_lite.data.sources import TfdsSource\n"
    f"TaskRegistry.add(Task('c4_here', TfdsSource('c4/en:3.1.0', data_dir={str(data_dir)!r}),\n"
    "  [preprocessors.tokenize, preprocessors.append_eos, objectives.causal_lm],\n"
    "  {'targets': Feature()}), replace=True)\n"
  )
  workdir = tmp_path / "run"
  # The default vocabulary (SentencePiece on the task's own text) is where the source is opened.
  code = cli.main(
    ["tasks", "show", "c4_here", "--task-module", str(module), "--workdir", str(workdir)]
  )
  err = capsys.readouterr().err
  assert code == 2 and "Traceback" not in err
  (line,) = [line for line in err.splitlines() if "error:" in line]
  assert "TFDS dataset 'c4/en:3.1.0' is not prepared in " + str(data_dir) in line
  assert f"tfds build c4/en:3.1.0 --data_dir={data_dir}" in line
  assert not workdir.exists()


def test_tfds_not_prepared_message_without_data_dir(monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", "gs://bucket/tfds")
  message = TfdsSource("wikipedia/20230601.en:1.0.0").not_prepared_message()
  assert "is not prepared in gs://bucket/tfds" in message
  assert "`tfds build wikipedia/20230601.en:1.0.0`" in message
