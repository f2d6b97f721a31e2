"""Bad input in data files (issue 14): training corpora, fine-tuning records and vocabulary files
each give ONE line naming the file (and line), exit non-zero, no traceback. The shared helpers and
the rest of the suite are in test_bad_input.py."""

import gzip
import json
import os

import pytest
import test_bad_input as shared
from test_bad_input import TINY, assert_one_line, run_cli, snapshot

workdir = shared.workdir  # the fixture: a workdir holding a file no case may touch

# ---------------------------------------------------------------------------------------------
# Training corpora (task sources under t5x_lite/data/sources.py): one line naming file and line.


def _gzip_truncated(path):
  """Half of a gzip stream of 3000 lines (JSONL for a .jsonl.gz), as a copy cut short leaves it."""

  jsonl = path.name.endswith(".jsonl.gz")
  lines = (json.dumps({"text": f"line {i}"}) if jsonl else f"line {i} of text" for i in range(3000))
  data = gzip.compress("".join(line + "\n" for line in lines).encode())
  path.write_bytes(data[: len(data) // 2])


def _lines(*extra):
  good = [json.dumps({"text": f"document {i} has some words"}) for i in range(20)]
  return ("\n".join(good + list(extra)) + "\n").encode()


# name: (file name, bytes or a writer, source expression over PATH, message, ...)
CORPORA = {
  "jsonl_array_line": ("c.jsonl", _lines("[1, 2, 3]"), "JsonlSource(PATH)",
                       "c.jsonl:21: expected a JSON object, found a list"),
  "jsonl_string_line": ("c.jsonl", _lines('"just text"'), "JsonlSource(PATH)",
                        "c.jsonl:21: expected a JSON object, found a str"),
  "jsonl_no_text_field": ("c.jsonl", _lines('{"body": "x", "n": 1}'), "JsonlSource(PATH)",
                          "c.jsonl:21: no field 'text' (fields: body, n)"),
  "jsonl_text_not_a_string": ("c.jsonl", _lines('{"text": null}'), "JsonlSource(PATH)",
                              "c.jsonl:21: field 'text' is a NoneType, expected a string"),
  "jsonl_bad_json": ("c.jsonl", _lines('{"text": '), "JsonlSource(PATH)",
                     "c.jsonl:21: not valid JSON"),
  "jsonl_invalid_utf8": ("c.jsonl", _lines() + b'{"text": "caf\xe9"}\n', "JsonlSource(PATH)",
                         "c.jsonl:21: not valid UTF-8 (byte 0xe9 at column 14)"),
  "text_lines_invalid_utf8": ("c.txt", b"fine line\nbad \xff line\n",
                              "TextFileSource(PATH, mode='line')",
                              "c.txt:2: not valid UTF-8 (byte 0xff at column 5)"),
  "text_file_invalid_utf8": ("c.txt", b"one\ntwo\n\x80three\n", "TextFileSource(PATH, mode='paragraph')",
                             "c.txt:3: not valid UTF-8 (byte 0x80 at column 1)"),
  # One file read whole is one document: it trains, whatever its path hashes to, and the run
  # stops before compiling because nothing is left to evaluate on.
  "text_file_one_document": ("c.txt", b"one\ntwo\n", "TextFileSource(PATH)",
                             "split 'validation' is empty", "the corpus is one document"),
  "text_truncated_gzip": ("c.txt.gz", _gzip_truncated, "TextFileSource(PATH, mode='paragraph')",
                          "c.txt.gz: truncated or corrupt gzip after line"),
  "jsonl_truncated_gzip": ("c.jsonl.gz", _gzip_truncated, "JsonlSource(PATH)",
                           "c.jsonl.gz: truncated or corrupt gzip after line"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CORPORA))
def test_bad_training_corpus(capsys, tmp_path, workdir, case):
  name, content, source, *messages = CORPORA[case]
  path = tmp_path / name
  if callable(content):
    content(path)
  else:
    path.write_bytes(content)
  module = tmp_path / "corpus_tasks.py"
  module.write_text(
    "from t5x_lite.data import objectives, preprocessors\n"
    "from t5x_lite.data.registry import Feature, Task, TaskRegistry\n"
    "from t5x_lite.data.sources import JsonlSource, TextFileSource\n"
    f"PATH = {str(path)!r}\n"
    f"TaskRegistry.add(Task('my_corpus', {source}, [preprocessors.tokenize, "
    "preprocessors.append_eos, objectives.causal_lm], {'targets': Feature()}), replace=True)\n"
  )
  before = snapshot(workdir)
  code, err, _ = run_cli(
    capsys,
    ["train", "--config", TINY, "--workdir", str(workdir), "--config.data.vocab=byte",
     f"--config.data.task_modules=('{module}',)", "--config.data.task=my_corpus"],
  )  # fmt: skip
  assert_one_line(code, err, *messages)
  assert snapshot(workdir) == before


@pytest.mark.parametrize(
  "content,message",
  [
    (b'{"text": "ok", "label": "pos"}\n{"text": "\xc3(", "label": "neg"}\n',
     "r.jsonl:2: not valid UTF-8"),
    (b'{"text": "ok", "label": "pos"}\n["ok", "neg"]\n', "r.jsonl:2: expected a JSON object"),
  ],
  ids=["invalid_utf8", "array_line"],
)  # fmt: skip
def test_bad_fine_tuning_records(capsys, tmp_path, workdir, content, message):
  (tmp_path / "r.jsonl").write_bytes(content)
  module = tmp_path / "cls_tasks.py"
  module.write_text(
    "from t5x_lite.data.tasks.finetune import classification_task\n"
    f"classification_task('my_cls', {str(tmp_path / 'r.jsonl')!r}, labels=['neg', 'pos'])\n"
  )
  code, err, _ = run_cli(
    capsys,
    ["tasks", "show", "my_cls", "--task-module", str(module), "--workdir", str(workdir),
     "--config.data.vocab=byte"],
  )  # fmt: skip
  assert_one_line(code, err, message)


# ---------------------------------------------------------------------------------------------
# Vocabulary files: corrupt, a directory in their place, or a tokenizer that cannot be trained.


def _corrupt_model(tmp_path):
  path = tmp_path / "spm.model"
  path.write_bytes(bytes(range(256)) * 3)
  return path


VOCABS = {
  "corrupt_model": (_corrupt_model, "is not a valid SentencePiece model (768 bytes"),
  "empty_model": (lambda d: _write_bytes(d / "empty.model", b""), "is not a valid SentencePiece"),
  "directory_without_tokenizer": (lambda d: _mkdir(d / "tok"), "has no tokenizer"),
  "directory_named_like_a_model": (lambda d: _mkdir(d / "spm.model"), "has no tokenizer"),
  "spiece_model_is_a_directory": (
    lambda d: _mkdir(_mkdir(d / "tok") / "spiece.model") and d / "tok",
    "is a directory, expected a .model file",
  ),
  "corrupt_spiece_in_folder": (
    lambda d: _write_bytes(_mkdir(d / "tok") / "spiece.model", b"\x00garbage") and d / "tok",
    "spiece.model is not a valid SentencePiece model",
  ),
}


def _mkdir(path):
  path.mkdir()
  return path


def _write_bytes(path, data):
  path.write_bytes(data)
  return path


@pytest.mark.parametrize("case", sorted(VOCABS))
def test_bad_vocabulary_file(capsys, tmp_path, workdir, case):
  make, message = VOCABS[case]
  path = make(tmp_path)
  before = snapshot(workdir)
  code, err, _ = run_cli(
    capsys,
    ["train", "--config", TINY, "--workdir", str(workdir), f"--config.data.vocab_path={path}"],
  )
  assert_one_line(code, err, message)
  assert snapshot(workdir) == before


def test_corrupt_cached_vocabulary_in_the_workdir(capsys, workdir):
  """The SentencePiece model a run trained on first use, damaged since: named, not retrained."""
  from t5x_lite.config import get_config
  from t5x_lite.data import pipeline

  path = pipeline.vocabulary_cache_path(get_config(TINY), str(workdir))
  os.makedirs(os.path.dirname(path))
  with open(path, "wb") as f:
    f.write(b"half a model")
  before = snapshot(workdir)
  code, err, _ = run_cli(capsys, ["train", "--config", TINY, "--workdir", str(workdir)])
  assert_one_line(code, err, "is not a valid SentencePiece model")
  assert snapshot(workdir) == before


@pytest.mark.parametrize(
  "text,size,message",
  [
    ("", 1000, "no text to train a vocabulary on: the input has no non-empty line"),
    ("\n\n   \n", 1000, "no text to train a vocabulary on"),
    ("hello world\nfoo bar baz\n", 1000,
     "vocab_size=1000 is too large for this text (2 lines): SentencePiece finds at most 16 "
     "pieces in it, so use a vocab size of at most 116 (with 100 extra ids)"),
  ],
  ids=["empty_file", "blank_lines", "vocab_too_large"],
)  # fmt: skip
def test_tokenizer_train_errors_in_our_words(capsys, tmp_path, text, size, message):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text(text)
  code, err, _ = run_cli(
    capsys,
    ["tokenizer", "train", "--input", str(corpus), "--vocab-size", str(size),
     "--out", str(tmp_path / "spm")],
  )  # fmt: skip
  assert_one_line(code, err, message)
  assert "src/" not in err and "INTERNAL" not in err
  assert not list(tmp_path.glob("spm*"))
