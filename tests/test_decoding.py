"""Decoding: KV cache == full recomputation, beam 1 == greedy, top-k 1 == greedy, seeded
sampling, exact beam search on a tiny vocabulary, and T5 greedy == transformers' generate."""

import dataclasses
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5x_lite import decoding
from t5x_lite.config import load_config_file
from t5x_lite.models import build_model, to_model_config

NEW = 6


def _model(spec, **changes):
  config = to_model_config(load_config_file(spec).model)
  sizes = dict(vocab_size=40, d_model=32, num_heads=2, d_ff=48, num_layers=2)
  config = dataclasses.replace(config, **{**sizes, **changes})
  model = build_model(config)
  shapes = model.input_shapes(1, model.default_lengths())
  params = nn.unbox(jax.jit(model.init)(jax.random.key(1), shapes))
  # Sharpen the random model's distributions so that greedy paths differ between prompts.
  params = jax.tree.map(lambda p: p * 3.0 if p.ndim == 2 else p, params)
  return model, params


@pytest.fixture(scope="module", params=["gpt", "t5"])
def family(request):
  if request.param == "gpt":
    model, params = _model("gpt.py:tiny", max_length=32)
  else:
    model, params = _model("t5.py:tiny", head_dim=16, relative_buckets=8)
  # Prompts of different lengths (right-padded with 0).
  prompts, lengths = decoding.pad_prompts([[5, 9, 12, 3], [7], [20, 21]])
  return model, params, jnp.asarray(prompts), jnp.asarray(lengths)


def _greedy(family, **kwargs):
  model, params, prompts, lengths = family
  kwargs.setdefault("eos_id", -1)
  out = decoding.generate_tokens(
    model, params, prompts, lengths, jax.random.key(0), max_new_tokens=NEW, **kwargs
  )
  return np.asarray(out)


def test_kv_cache_equals_full_recomputation(family):
  cached = _greedy(family)
  recomputed = _greedy(family, use_cache=False)
  np.testing.assert_array_equal(cached, recomputed)
  assert cached.shape == (3, NEW)
  assert len({tuple(r) for r in cached.tolist()}) > 1  # the prompts matter


def test_eos_stops_a_row_and_pads_with_zeros(family):
  free = _greedy(family)
  eos = int(free[0, 2])
  stopped = _greedy(family, eos_id=eos)
  first = list(free[0]).index(eos)
  np.testing.assert_array_equal(stopped[0, : first + 1], free[0, : first + 1])
  assert (stopped[0, first + 1 :] == 0).all()


def test_top_k_1_and_beam_1_equal_greedy(family):
  model, params, prompts, lengths = family
  greedy = _greedy(family)
  top1 = _greedy(family, temperature=1.0, top_k=1)
  np.testing.assert_array_equal(top1, greedy)
  eos = int(greedy[1, 3])  # an EOS that greedy actually emits in one row
  greedy_eos = _greedy(family, eos_id=eos)
  beam1, _ = decoding.beam_search(
    model, params, prompts, lengths, num_beams=1, max_new_tokens=NEW, alpha=0.0, eos_id=eos
  )
  np.testing.assert_array_equal(np.asarray(beam1), greedy_eos)


def test_sampling_is_reproducible_with_a_seed(family):
  model, params, prompts, lengths = family

  def sample(seed):
    out = decoding.generate_tokens(
      model, params, prompts, lengths, jax.random.key(seed), max_new_tokens=NEW,
      temperature=1.0, top_p=0.9, eos_id=-1,
    )  # fmt: skip
    return np.asarray(out)

  np.testing.assert_array_equal(sample(0), sample(0))
  assert not np.array_equal(sample(0), sample(7))


def test_beam_search_cache_matches_recomputation_and_beats_greedy(family):
  model, params, prompts, lengths = family
  kwargs = dict(num_beams=4, max_new_tokens=NEW, alpha=0.6, eos_id=-1)
  tokens, scores = decoding.beam_search(model, params, prompts, lengths, **kwargs)
  tokens_nc, scores_nc = decoding.beam_search(
    model, params, prompts, lengths, use_cache=False, **kwargs
  )
  np.testing.assert_array_equal(np.asarray(tokens), np.asarray(tokens_nc))
  np.testing.assert_allclose(np.asarray(scores), np.asarray(scores_nc), rtol=1e-5)
  greedy_scores = _sequence_logp(model, params, prompts, lengths, jnp.asarray(_greedy(family)))
  beam_logp = _sequence_logp(model, params, prompts, lengths, tokens)
  assert (beam_logp >= greedy_scores - 1e-4).all()
  # No beam emits EOS (eos_id=-1): T5X returns the best live beam's raw log-probability.
  np.testing.assert_allclose(np.asarray(scores), beam_logp, rtol=1e-4)


def test_beam_search_penalty_counts_a_decoder_prompt_as_t5x(family):
  """A finished beam scores logp / ((5 + L) / 6)^alpha with T5X's L = cur_index + 1: the prompt
  plus the generated tokens (EOS included) for a decoder, the generated tokens for T5."""
  model, params, prompts, lengths = family
  free, _ = decoding.beam_search(
    model, params, prompts, lengths, num_beams=4, max_new_tokens=NEW, alpha=0.6, eos_id=-1
  )
  eos = int(np.asarray(free)[0, 2])  # a token the search emits in row 0
  tokens, scores = decoding.beam_search(
    model, params, prompts, lengths, num_beams=4, max_new_tokens=NEW, alpha=0.6, eos_id=eos
  )
  tokens, scores = np.asarray(tokens), np.asarray(scores)
  logp = _sequence_logp(model, params, prompts, lengths, tokens)
  decoder = model.config.family == "decoder"
  checked = 0
  for row in range(tokens.shape[0]):
    if eos not in tokens[row].tolist():
      np.testing.assert_allclose(scores[row], logp[row], rtol=1e-4)  # unfinished: raw
      continue
    generated = tokens[row].tolist().index(eos) + 1
    row_logp = _sequence_logp(
      model,
      params,
      prompts[row : row + 1],
      lengths[row : row + 1],
      tokens[row : row + 1, :generated],
    )[0]
    length = generated + (int(lengths[row]) if decoder else 0)
    np.testing.assert_allclose(scores[row], row_logp / ((5.0 + length) / 6.0) ** 0.6, rtol=1e-4)
    checked += 1
  assert checked >= 1


def _sequence_logp(model, params, prompts, lengths, generated):
  """log p(generated | prompt) of each row, from one jitted forward pass over all rows."""
  prompts, lengths, generated = map(np.asarray, (prompts, lengths, generated))
  rows, new = generated.shape
  if model.config.family == "encoder_decoder":
    targets = generated
    batch = {"encoder_input_tokens": prompts}
    weights = np.ones_like(generated, np.float32)
  else:
    width = prompts.shape[1] + new
    targets = np.zeros((rows, width), np.int32)
    weights = np.zeros((rows, width), np.float32)
    for i in range(rows):
      n = int(lengths[i])
      targets[i, : n + new] = np.concatenate([prompts[i, :n], generated[i]])
      weights[i, n : n + new] = 1.0
    batch = {}
  inputs = np.concatenate([np.zeros((rows, 1), np.int32), targets[:, :-1]], axis=1)
  batch.update(
    decoder_target_tokens=targets, decoder_input_tokens=inputs, decoder_loss_weights=weights
  )
  # Unpacked rows: segment ids 1 over the whole row, so that a 0 target is not padding.
  batch["decoder_segment_ids"] = np.ones_like(targets)
  return np.asarray(jax.jit(model.score)(params, batch))


def test_beam_search_is_exact_when_beams_cover_the_vocabulary():
  """With num_beams >= vocab every 2-token continuation survives step 1: the result is the
  argmax over all vocab² sequences."""
  model, params = _model("t5.py:tiny", head_dim=16, relative_buckets=8, vocab_size=8)
  prompts, lengths = jnp.asarray([[3, 4, 5]]), jnp.asarray([3])
  tokens, _ = decoding.beam_search(
    model, params, prompts, lengths, num_beams=8, max_new_tokens=2, alpha=0.6, eos_id=-1
  )
  candidates = list(itertools.product(range(8), repeat=2))
  batch = {
    "encoder_input_tokens": jnp.tile(prompts, (len(candidates), 1)),
    "decoder_target_tokens": jnp.asarray(candidates),
    "decoder_input_tokens": jnp.asarray([[0, a] for a, _ in candidates]),
    "decoder_loss_weights": jnp.ones((len(candidates), 2)),
  }
  best = candidates[int(jnp.argmax(jax.jit(model.score)(params, batch)))]
  assert tuple(np.asarray(tokens)[0]) == best


def test_generate_text_rejects_empty_prompt(family):
  model, params, _, _ = family

  class Vocab:
    eos_id = 1

    def encode(self, text):
      return [5] * len(text.split())

    def decode(self, ids):
      return " ".join(map(str, ids))

  with pytest.raises(ValueError, match="empty"):
    decoding.generate_text(model, params, Vocab(), ["ok", "  "])
  out = decoding.generate_text(model, params, Vocab(), ["a b", "c"], max_new_tokens=3)
  assert len(out) == 2


# ---------------------------------------------------------------------------------------------
# Parity with transformers' greedy generate (optional extra: torch + transformers).


def test_t5_greedy_matches_transformers_generate(tmp_path):
  torch = pytest.importorskip("torch", reason="optional test extra: torch (CPU) not installed")
  transformers = pytest.importorskip("transformers", reason="optional test extra: transformers")
  from t5x_lite.convert import hf

  torch.manual_seed(0)
  hf_config = transformers.T5Config(
    vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
    relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
    feed_forward_proj="relu", tie_word_embeddings=True, decoder_start_token_id=0,
    eos_token_id=1, pad_token_id=0,
  )  # fmt: skip
  reference = transformers.T5ForConditionalGeneration(hf_config).eval()
  reference.save_pretrained(tmp_path, safe_serialization=True)
  config, params = hf.import_hf(str(tmp_path))
  model = build_model(config)
  inputs = [[5, 6, 7, 8, 9, 1], [10, 11, 1]]
  padded, lengths = decoding.pad_prompts(inputs)
  ours = decoding.generate_tokens(
    model, params, jnp.asarray(padded), jnp.asarray(lengths), jax.random.key(0),
    max_new_tokens=10, eos_id=1,
  )  # fmt: skip
  with torch.no_grad():
    theirs = reference.generate(
      input_ids=torch.tensor(padded, dtype=torch.long),
      attention_mask=torch.tensor(padded > 0, dtype=torch.long),
      max_new_tokens=10, do_sample=False, num_beams=1,
    )  # fmt: skip
  theirs = theirs[:, 1:].numpy()  # drop the decoder start token
  for row, (mine, ref) in enumerate(zip(np.asarray(ours), theirs)):
    ref = [int(t) for t in ref]
    mine = [int(t) for t in mine]
    n = min(len(ref), len(mine))
    # HF pads finished rows with pad (0) too; compare up to and including EOS.
    assert mine[:n] == ref[:n], f"row {row}: ours {mine} vs transformers {ref}"
