"""Language ID needs no download: >= 95% on a 12-language sample with sockets blocked."""

import socket

import pytest
from curation_langid_sample import SAMPLE

from t5x_lite.curation import langid


@pytest.fixture
def no_network(monkeypatch):
  def refuse(*args, **kwargs):
    raise OSError("network access in a test")

  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)
  monkeypatch.setattr(langid, "_loaded", {})  # load the model afresh, offline


@pytest.mark.parametrize("model", langid.MODELS)
def test_accuracy_on_twelve_languages_offline(no_network, model):
  predict = langid.identifier(model)
  items = [(code, text) for code, texts in SAMPLE.items() for text in texts]
  assert len(SAMPLE) >= 10 and len(items) == 36
  results = [(code, *predict(text)) for code, text in items]
  correct = sum(code == got for code, got, _ in results)
  assert correct / len(items) >= 0.95, [r for r in results if r[0] != r[1]]
  assert all(0.0 <= score <= 1.0 for _, _, score in results)
  if model == "fasttext_lite":  # a probability: confident on clean prose
    assert min(score for _, _, score in results) > 0.65
