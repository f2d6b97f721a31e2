"""Runs with a `tokenizers` vocabulary end to end, and the vocabulary hash kept by checkpoints."""

import os

import pytest

import t5x_lite
from t5x_lite import cli
from t5x_lite.data.hf_vocabulary import HuggingFaceVocabulary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(workdir, *overrides):
  argv = ["train", "--config", "gpt.py:tiny", "--workdir",
          str(workdir), "--config.train.batch_size=8", "--config.train.eval_every=0",
          "--config.train.sample_prompt=", "--config.data.feature_lengths={'targets': 32}",
          *overrides]  # fmt: skip
  return cli.main(argv)


@pytest.mark.slow
def test_byte_bpe_run_and_a_resume_with_another_vocabulary_is_refused(tmp_path, capsys):
  workdir = tmp_path / "run"
  assert _train(workdir, "--config.train.steps=2", "--config.data.vocab_type=byte-bpe") == 0
  loaded = t5x_lite.load(str(workdir))
  assert isinstance(loaded.vocabulary, HuggingFaceVocabulary)
  assert loaded.config.data.vocab_fingerprint == loaded.vocabulary.fingerprint
  assert loaded.vocabulary.word_boundary == ("starts", "Ġ")
  (text,) = loaded.generate(["def main"], max_new_tokens=4)
  assert isinstance(text, str)
  capsys.readouterr()
  # Resuming with a vocabulary trained differently would read the embeddings with other ids.
  code = _train(workdir, "--config.train.steps=4", "--config.data.vocab_type=wordpiece")
  lines = capsys.readouterr().err.strip().splitlines()
  err = lines[-1]  # the log lines above it are the run's INFO/WARNING progress
  assert code == 2 and err.startswith("t5x-lite train: error: "), lines
  assert not any("Traceback" in line for line in lines), lines
  assert "the checkpoint was trained with vocabulary tokenizers:" in err
  assert "this run reads tokenizers:" in err
