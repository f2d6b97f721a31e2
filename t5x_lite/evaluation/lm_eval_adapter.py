"""lm-evaluation-harness can evaluate a t5x_lite run: `T5xLiteLM`, registered as 't5x_lite'.

  import t5x_lite.evaluation.lm_eval_adapter  # registers the model name
  lm_eval.simple_evaluate(model="t5x_lite", model_args="workdir=runs/gpt_small", tasks=[...])

or, from Python, `lm_eval.simple_evaluate(model=T5xLiteLM(workdir=...), tasks=...)`. Needs the
optional extra `pip install 't5x-lite[harness]'` (lm-eval). The scoring is the harness's
(`t5x_lite/evaluation/harness.py:ModelLM`); `loglikelihood_rolling` cuts a document into lm-eval's
rolling windows (`get_rolling_token_windows` with a context of 1, made disjoint), so every token
is predicted once and the first from the document start.
"""

from __future__ import annotations

from typing import Any

from lm_eval import utils as lm_eval_utils
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from t5x_lite import inference
from t5x_lite.evaluation.harness import ModelLM

_DOCUMENT_START = -1  # stands for "no context": the model's own segment start


@register_model("t5x_lite")
class T5xLiteLM(LM):
  """A t5x_lite decoder-only checkpoint as an lm-eval model."""

  def __init__(self, workdir: str, step: int | None = None, batch_size: int = 32, **kwargs: Any):
    super().__init__()
    del kwargs  # lm-eval passes device/batch settings meant for torch models
    loaded = inference.load(workdir, step=None if step in (None, "") else int(step),
                            batch_size=int(batch_size))  # fmt: skip
    self.model = ModelLM.from_loaded(loaded)

  def loglikelihood(self, requests) -> list[tuple[float, bool]]:
    return self.model.loglikelihood([r.args for r in tqdm(requests, disable=len(requests) < 64)])

  def loglikelihood_rolling(self, requests) -> list[float]:
    vocabulary, length = self.model.vocabulary, self.model.max_length
    results = []
    for request in requests:
      (text,) = request.args
      windows = [
        lm_eval_utils.make_disjoint_window(window)
        for window in lm_eval_utils.get_rolling_token_windows(
          token_list=list(vocabulary.encode(text)),
          prefix_token=_DOCUMENT_START,
          max_seq_len=length,
          context_len=1,
        )
      ]
      pairs = [
        ([t for t in context if t != _DOCUMENT_START], target) for context, target in windows
      ]
      results.append(sum(score for score, _ in self.model.score_tokens(pairs)))
    return results

  def generate_until(self, requests) -> list[str]:
    triples = []
    for request in requests:
      context, gen_kwargs = request.args
      until = gen_kwargs.get("until", [])
      until = [until] if isinstance(until, str) else list(until)
      triples.append((context, until, int(gen_kwargs.get("max_gen_toks", 256))))
    return self.model.generate_until(triples)
