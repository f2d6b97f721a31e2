"""Issue 14, point 17: `train.init_from` a BERT run into a GPT loaded 2 embedding tables and
started the other 18 tensors fresh, silently. Now it is refused in one line naming both
families, before any step runs."""

import pytest

from t5x_lite import cli
from t5x_lite.training import init_from

BACKBONE = {f"decoder/layers/{name}": (2, 4, 4) for name in ("q", "k", "v", "o", "wi", "wo")}


def test_most_of_the_model_missing_is_refused_naming_both():
  saved = {"token_embedder/embedding": (10, 4), "encoder/layers/q": (2, 4, 4)}
  target = {"token_embedder/embedding": (10, 4), **BACKBONE}
  with pytest.raises(init_from.InitFromError) as error:
    init_from.match(target, saved, "runs/bert", ("EncoderModel", "DecoderModel"))
  assert str(error.value) == (
    "train.init_from=runs/bert: the checkpoint holds a model of class EncoderModel, this one is "
    "DecoderModel: only 1 of the 7 parameter tensors of this model are in the checkpoint "
    "(token_embedder/embedding), the rest would start fresh; init_from loads a run of the same "
    "family and layout (a new head is fine)"
  )


def test_a_new_head_is_not_most_of_the_model():
  saved = {"token_embedder/embedding": (10, 4), **BACKBONE, "lm_head/kernel": (4, 10)}
  target = {"token_embedder/embedding": (10, 4), **BACKBONE, "head/dense": (4, 4), "head/out":
            (4, 2)}  # fmt: skip
  loaded, initialized, ignored = init_from.match(target, saved, "r", ("DecoderModel",) * 2)
  assert len(loaded) == 7 and initialized == ["head/dense", "head/out"]
  assert ignored == ["lm_head/kernel"]
  # Exactly half fresh is still allowed; one more is not.
  half = {f"new/{i}": (1,) for i in range(7)}
  init_from.match({**target, **{k: v for k, v in list(half.items())[:5]}}, saved, "r")
  with pytest.raises(init_from.InitFromError, match="only 7 of the 15 parameter tensors"):
    init_from.match({**target, **{k: v for k, v in list(half.items())[:6]}}, saved, "r")


@pytest.mark.slow
def test_bert_run_into_gpt_over_the_cli(capsys, tmp_path):
  bert = tmp_path / "bert"
  argv = ["train", "--config", "bert.py:tiny", "--workdir", str(bert), "--config.data.vocab=byte",
          "--config.train.steps=1", "--config.train.eval_steps=1",
          "--config.train.sample_tokens=0"]  # fmt: skip
  assert cli.main(argv) == 0
  capsys.readouterr()
  gpt = tmp_path / "gpt"
  code = cli.main(
    ["train", "--config", "gpt.py:tiny", "--workdir", str(gpt), "--config.data.vocab=byte",
     "--config.model.max_length=128", f"--config.train.init_from={bert}"]
  )  # fmt: skip
  err = capsys.readouterr().err
  assert code == 2 and "Traceback" not in err
  (line,) = [line for line in err.splitlines() if "error:" in line]
  assert "holds a model of class EncoderModel, this one is DecoderModel" in line
  assert "only 2 of the 20 parameter tensors" in line
  assert not (gpt / "checkpoints").exists() or not any((gpt / "checkpoints").iterdir())
