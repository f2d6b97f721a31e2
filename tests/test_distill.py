"""Distillation building blocks: the loss equals DistilBERT's distiller (torch), the student
init takes every other teacher layer, a mismatched teacher is a one-line error."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from t5x_lite.config import load_config_file
from t5x_lite.errors import ConfigError
from t5x_lite.models import build_model, to_model_config
from t5x_lite.training import distill


def _distiller_reference(s_logits, t_logits, s_hidden, t_hidden, mask, lm_loss, T=2.0):
  """DistilBERT's `Distiller.step` (restrict_ce_to_mask=False), in torch."""
  torch = pytest.importorskip("torch")
  s_logits, t_logits = torch.tensor(s_logits), torch.tensor(t_logits)
  s_hidden, t_hidden = torch.tensor(s_hidden), torch.tensor(t_hidden)
  mask = torch.tensor(mask).bool()
  m = mask.unsqueeze(-1).expand_as(s_logits)
  s = torch.masked_select(s_logits, m).view(-1, s_logits.size(-1))
  t = torch.masked_select(t_logits, m).view(-1, s_logits.size(-1))
  ce = torch.nn.KLDivLoss(reduction="batchmean")(
    torch.nn.functional.log_softmax(s / T, dim=-1), torch.nn.functional.softmax(t / T, dim=-1)
  ) * T**2  # fmt: skip
  d = s_hidden.size(-1)
  mh = mask.unsqueeze(-1).expand_as(s_hidden)
  sh = torch.masked_select(s_hidden, mh).view(-1, d)
  th = torch.masked_select(t_hidden, mh).view(-1, d)
  cos = torch.nn.CosineEmbeddingLoss(reduction="mean")(sh, th, sh.new(sh.size(0)).fill_(1))
  return (5.0 * ce + 2.0 * lm_loss + 1.0 * cos).item(), ce.item(), cos.item()


def test_distillation_loss_equals_distilbert_distiller():
  rng = np.random.default_rng(0)
  s_logits, t_logits = rng.normal(size=(2, 5, 11)), 2 * rng.normal(size=(2, 5, 11))
  s_hidden, t_hidden = rng.normal(size=(2, 5, 8)), rng.normal(size=(2, 5, 8))
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.float32)
  expected, ce, cos = _distiller_reference(s_logits, t_logits, s_hidden, t_hidden, mask, 1.5)
  loss, parts = distill.distillation_loss(
    jnp.asarray(s_logits), jnp.asarray(t_logits), jnp.asarray(s_hidden), jnp.asarray(t_hidden),
    jnp.asarray(mask), jnp.asarray(1.5),
  )  # fmt: skip
  np.testing.assert_allclose(parts["ce"], ce, rtol=1e-5)
  np.testing.assert_allclose(parts["cos"], cos, rtol=1e-5)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def _params(model):
  shapes = model.input_shapes(2, {"encoder_input_tokens": 8})
  return nn.meta.unbox(model.init(jax.random.key(0), shapes))


@pytest.mark.parametrize("scan", [True, False])
def test_student_from_teacher_takes_every_other_layer(scan):
  config = dataclasses.replace(
    to_model_config(load_config_file("distilbert.py:tiny").model), num_layers=4, scan_layers=scan
  )
  teacher = build_model(config)
  params = _params(teacher)
  student = build_model(dataclasses.replace(config, num_layers=2))
  init = distill.student_from_teacher(params, 2)
  expected = jax.tree_util.tree_map(lambda x: x.shape, _params(student))
  assert jax.tree_util.tree_map(lambda x: x.shape, init) == expected
  if scan:
    got = init["encoder"]["layers"]["mlp"]["wi"]["kernel"]
    want = params["encoder"]["layers"]["mlp"]["wi"]["kernel"][np.array([0, 2])]
  else:
    got = init["encoder"]["layers_1"]["mlp"]["wi"]["kernel"]
    want = params["encoder"]["layers_2"]["mlp"]["wi"]["kernel"]
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(init["token_embedder"]["embedding"],
                                params["token_embedder"]["embedding"])  # fmt: skip


def test_mismatched_teacher_is_one_line_error():
  student = build_model(load_config_file("distilbert.py:tiny").model)
  other_vocab = build_model(load_config_file("distilbert.py:tiny").model.to_dict()
                            | {"vocab_size": 2048})  # fmt: skip
  with pytest.raises(ConfigError, match=r"^config.distill.teacher has model.vocab_size=2048; the student has "
                     r"1024 \(the KL needs one vocabulary\)$"):  # fmt: skip
    distill.DistillationModel(student, other_vocab, None)
  gpt = build_model(load_config_file("gpt.py:tiny").model)
  with pytest.raises(
    ConfigError, match="^config.distill.teacher is a DecoderModel; the student is an EncoderModel"
  ):
    distill.DistillationModel(student, gpt, None)


@pytest.mark.parametrize("spec", ["distilbert.py:tiny", "gpt.py:tiny"])
def test_distillation_model_loss_and_gradients(spec):
  """A student equal to its teacher has KL = cos = 0; gradients reach the student only."""
  config = to_model_config(load_config_file(spec).model)
  teacher = build_model(dataclasses.replace(config, num_layers=2))
  student = build_model(dataclasses.replace(config, num_layers=1))
  lengths = teacher.default_lengths()
  t_params = nn.meta.unbox(teacher.init(jax.random.key(1), teacher.input_shapes(2, lengths)))
  rng = np.random.default_rng(0)
  prefix = "decoder" if teacher.generative else "encoder"
  tokens = rng.integers(3, 500, size=(2, 8)).astype(np.int32)
  batch = {
    f"{prefix}_input_tokens": jnp.asarray(tokens),
    f"{prefix}_target_tokens": jnp.asarray(tokens * (rng.random((2, 8)) < 0.5)),
  }
  same = distill.DistillationModel(teacher, teacher, t_params)
  loss, metrics = same.loss(t_params, batch)
  np.testing.assert_allclose(metrics["distill/ce"][0], 0.0, atol=1e-4)
  np.testing.assert_allclose(metrics["distill/cos"][0], 0.0, atol=1e-5)
  lm = metrics["lm_loss"][0] / metrics["lm_loss"][1]
  np.testing.assert_allclose(loss, 2.0 * lm, rtol=1e-5)

  model = distill.DistillationModel(student, teacher, t_params)
  s_params = distill.student_from_teacher(t_params, 1)
  grads = jax.grad(lambda p: model.loss(p, batch)[0])(s_params)
  assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))
  assert float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree_util.tree_leaves(grads))) > 0
  loss, metrics = jax.jit(model.loss)(s_params, batch)  # the teacher inside one jitted function
  assert float(metrics["distill/ce"][0]) > 0 and np.isfinite(float(loss))
