"""Decoding for the generative families (decoder GPT, encoder-decoder T5).

Greedy, temperature, top-k and top-p sampling, and beam search with T5X's length penalty
((5 + length) / 6)^alpha. Everything runs in one jitted `lax.while_loop` over positions with
the model's KV cache (`model.init_cache` / `model.decode_step`, see models/decoder.py and
models/encoder_decoder.py). With `use_cache=False` each step recomputes the whole sequence
instead (the reference the cache is tested against).

Decoder sequences: position 0 holds 0 (the start token: the feature converter shifts targets
right with 0 at each segment start), then the prompt, then the generated tokens. Prompts of
different lengths share the loop: a row is *forced* to its prompt token while the position is
inside its prompt and *generated* after it, so no per-row prefill is needed.
Encoder-decoder: the inputs are encoded once; the decoder sequence is 0 then the generated
tokens (every row starts generating at position 1).

A row stops at EOS (kept in the output, then 0s) or after `max_new_tokens`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

NEG_INF = -1e10
DEFAULT_ALPHA = 0.6  # T5X's beam search length penalty


def _filter_logits(logits: jax.Array, top_k: int, top_p: float) -> jax.Array:
  """Masks logits [batch, vocab] outside the top-k and outside the top-p nucleus."""
  if top_k > 0:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, NEG_INF, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    # Keep the smallest set whose probability reaches top_p (the first token always stays).
    cutoff_index = jnp.sum(cumulative < top_p, axis=-1, keepdims=True)
    cutoff = jnp.take_along_axis(sorted_logits, cutoff_index, axis=-1)
    logits = jnp.where(logits < cutoff, NEG_INF, logits)
  return logits


def sample_next(
  logits: jax.Array, rng: jax.Array, temperature: float, top_k: int, top_p: float
) -> jax.Array:
  """Next tokens [batch] from logits [batch, vocab]; temperature 0 = greedy (argmax)."""
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = _filter_logits(logits.astype(jnp.float32) / temperature, top_k, top_p)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def brevity_penalty(alpha: float, length: jax.Array) -> jax.Array:
  """T5X / GNMT length normalization ((5 + length) / 6)^alpha."""
  return jnp.power((5.0 + length.astype(jnp.float32)) / 6.0, alpha)


# ---------------------------------------------------------------------------------------------
# Next-token logits of either family, with or without the KV cache.


def _is_encoder_decoder(model) -> bool:
  return model.encoder_decoder


def _step_function(model, params, inputs: jax.Array | None, rows: int, total: int, use_cache: bool):
  """(cache, next_logits(sequence [rows, total], cache, t) -> (logits [rows, vocab], cache)).

  `inputs` [rows, inputs_length]: the encoder inputs (encoder-decoder only, 0 = padding).
  """
  if _is_encoder_decoder(model):
    encoder_segment_ids = (inputs > 0).astype(jnp.int32)
    encoded = model.encode(params, {"encoder_input_tokens": inputs}) if use_cache else None
    cache = model.init_cache(rows, total, inputs.shape[1]) if use_cache else None
  else:
    cache = model.init_cache(rows, total) if use_cache else None

  def next_logits(sequence, cache, t):
    if use_cache:
      tokens = jax.lax.dynamic_slice_in_dim(sequence, t, 1, axis=1)  # [rows, 1]
      positions = jnp.full((rows, 1), t, jnp.int32)
      if _is_encoder_decoder(model):
        logits, cache = model.decode_step(
          params, cache, tokens, positions, encoded=encoded,
          encoder_segment_ids=encoder_segment_ids,
        )  # fmt: skip
      else:
        logits, cache = model.decode_step(params, cache, tokens, positions)
      return logits[:, 0].astype(jnp.float32), cache
    batch = {"decoder_input_tokens": sequence, "decoder_target_tokens": jnp.ones_like(sequence)}
    if inputs is not None:
      batch["encoder_input_tokens"] = inputs
    logits = model.apply_logits(params, batch)
    return jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False), cache

  return cache, next_logits


def _layout(prompts, prompt_lengths, max_new_tokens, encoder_decoder: bool, start_id: int = 0):
  """(sequence [batch, total] with the prompts placed, starts [batch], ends [batch]).

  Position 0 holds the decoder start token (`model.decoder_start_id`), as in training."""
  batch = prompts.shape[0]
  if encoder_decoder:
    sequence = jnp.zeros((batch, 1 + max_new_tokens), jnp.int32)
    starts = jnp.ones((batch,), jnp.int32)
  else:
    prompt_len = prompts.shape[1]
    sequence = jnp.zeros((batch, 1 + prompt_len + max_new_tokens), jnp.int32)
    sequence = sequence.at[:, 1 : 1 + prompt_len].set(prompts)
    starts = 1 + prompt_lengths.astype(jnp.int32)  # first generated position of each row
  sequence = sequence.at[:, 0].set(start_id)
  return sequence, starts, starts + max_new_tokens


def _generated(sequence: jax.Array, starts: jax.Array, max_new_tokens: int) -> jax.Array:
  index = starts[:, None] + jnp.arange(max_new_tokens)[None, :]
  return jnp.take_along_axis(sequence, index, axis=1)


@functools.partial(
  jax.jit,
  static_argnames=(
    "model",
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "use_cache",
  ),
)
def generate_tokens(
  model,
  params: Any,
  prompts: jax.Array,
  prompt_lengths: jax.Array,
  rng: jax.Array,
  *,
  max_new_tokens: int,
  temperature: float = 0.0,
  top_k: int = 0,
  top_p: float = 1.0,
  eos_id: int = 1,
  use_cache: bool = True,
) -> jax.Array:
  """Greedy (temperature 0) or sampled continuation of each prompt.

  prompts [batch, prompt_len] int32 (right-padded with 0), prompt_lengths [batch]: the decoder
  prompt, or for the encoder-decoder the encoder inputs (lengths unused: 0 is padding).
  Returns [batch, max_new_tokens] int32: the generated tokens, 0 after a row's EOS.
  `eos_id` is traced (not static): -1 = never stop, without another compile.
  """
  batch = prompts.shape[0]
  encoder_decoder = _is_encoder_decoder(model)
  start_id = getattr(model.config, "decoder_start_id", 0)
  sequence, starts, ends = _layout(
    prompts, prompt_lengths, max_new_tokens, encoder_decoder, start_id
  )
  total = sequence.shape[1]
  cache, next_logits = _step_function(
    model, params, prompts if encoder_decoder else None, batch, total, use_cache
  )

  def cond(carry):
    t, _, _, done = carry
    return (t < total - 1) & ~jnp.all(done)

  def body(carry):
    t, sequence, cache, done = carry
    logits, cache = next_logits(sequence, cache, t)
    sampled = sample_next(logits, jax.random.fold_in(rng, t), temperature, top_k, top_p)
    position = t + 1
    generating = (position >= starts) & (position < ends)
    sampled = jnp.where(done, 0, sampled)
    current = jax.lax.dynamic_index_in_dim(sequence, position, axis=1, keepdims=False)
    token = jnp.where(generating, sampled, current)
    done = done | (generating & (sampled == eos_id)) | (position + 1 >= ends)
    sequence = jax.lax.dynamic_update_index_in_dim(sequence, token, position, axis=1)
    return t + 1, sequence, cache, done

  done = jnp.zeros((batch,), bool)
  _, sequence, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), sequence, cache, done))
  return _generated(sequence, starts, max_new_tokens)


# ---------------------------------------------------------------------------------------------
# Beam search.


def _reorder_cache(cache: Any, index: jax.Array) -> Any:
  """Rows `index` [rows] of every cached key/value: [rows, length, heads, kv], or with a
  leading layer axis under nn.scan; scalars/indices (shared by all rows) stay as they are."""

  def gather(x):
    if x.ndim == 4:
      return jnp.take(x, index, axis=0)
    if x.ndim == 5:
      return jnp.take(x, index, axis=1)
    return x

  return jax.tree.map(gather, cache)


@flax.struct.dataclass
class BeamState:
  """The beam-search loop state (flax wmt's `BeamState`), per row of the batch:

  alive [batch, beams, total]: the live hypotheses (prompt + tokens so far);
  alive_logp [batch, beams]: their log-probabilities; finished / finished_score: the best
  hypotheses that emitted EOS, scored logp / brevity_penalty; cache: the KV cache of the
  batch * beams rows.
  """

  alive: jax.Array
  alive_logp: jax.Array
  finished: jax.Array
  finished_score: jax.Array
  cache: Any


def gather_beams(tree: Any, index: jax.Array) -> Any:
  """[batch, 2k, ...] -> [batch, k, ...]: the beams `index` [batch, k] of every leaf."""
  return jax.tree.map(
    lambda x: jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1),
    tree,
  )


@functools.partial(
  jax.jit, static_argnames=("model", "num_beams", "max_new_tokens", "alpha", "use_cache")
)
def beam_search(
  model,
  params: Any,
  prompts: jax.Array,
  prompt_lengths: jax.Array,
  *,
  num_beams: int,
  max_new_tokens: int,
  alpha: float = DEFAULT_ALPHA,
  eos_id: int = 1,
  use_cache: bool = True,
) -> tuple[jax.Array, jax.Array]:
  """Beam search as T5X: the best `num_beams` finished sequences by logp / brevity_penalty.

  The penalty's length is T5X's `cur_index + 1`, the length of the whole sequence: a decoder-only
  prompt counts; an encoder-decoder counts its generated tokens only. A row where no beam emits
  EOS returns its best live beam scored by its raw log-probability (T5X's `live_logprobs`).

  Same inputs as `generate_tokens`. Returns (tokens [batch, max_new_tokens], scores [batch]):
  the best finished beam per row (EOS included, 0 after), or the best alive one if no beam
  finished within `max_new_tokens`.
  """
  batch, k = prompts.shape[0], num_beams
  encoder_decoder = _is_encoder_decoder(model)
  start_id = getattr(model.config, "decoder_start_id", 0)
  sequence, starts, ends = _layout(
    prompts, prompt_lengths, max_new_tokens, encoder_decoder, start_id
  )
  total = sequence.shape[1]
  inputs = jnp.repeat(prompts, k, axis=0) if encoder_decoder else None
  cache, next_logits = _step_function(model, params, inputs, batch * k, total, use_cache)

  # Only beam 0 is live at first, so the k beams do not start as k copies of one hypothesis.
  initial = BeamState(
    alive=jnp.repeat(sequence[:, None], k, axis=1),  # [batch, beams, total]
    alive_logp=jnp.tile(jnp.asarray([0.0] + [NEG_INF] * (k - 1), jnp.float32), (batch, 1)),
    finished=jnp.zeros((batch, k, total), sequence.dtype),
    finished_score=jnp.full((batch, k), NEG_INF, jnp.float32),
    cache=cache,
  )
  beam_ids = jnp.arange(k)

  def body(t, state: BeamState) -> BeamState:
    logits, cache = next_logits(state.alive.reshape(batch * k, total), state.cache, t)
    log_probs = jax.nn.log_softmax(logits).reshape(batch, k, -1)  # [batch, beams, vocab]
    vocab = log_probs.shape[-1]
    position = t + 1
    candidates = (state.alive_logp[:, :, None] + log_probs).reshape(batch, k * vocab)
    scores, flat = jax.lax.top_k(candidates, 2 * k)  # [batch, 2k]
    from_beam, token = flat // vocab, (flat % vocab).astype(jnp.int32)
    seqs = gather_beams(state.alive, from_beam)  # [batch, 2k, total]
    seqs = jax.lax.dynamic_update_index_in_dim(seqs, token, position, axis=2)
    is_eos = token == eos_id
    # T5X's `brevity_penalty(alpha, cur_index + 1)`: the length in the whole decoded sequence,
    # so a decoder-only prompt counts (the position of this token; index 0 is BOS).
    penalty = brevity_penalty(alpha, jnp.full((batch,), position))[:, None]
    new_finished_score = jnp.where(is_eos, scores / penalty, NEG_INF)
    pool_score = jnp.concatenate([state.finished_score, new_finished_score], axis=1)
    pool = jnp.concatenate([state.finished, seqs], axis=1)
    top_finished_score, top = jax.lax.top_k(pool_score, k)
    top_finished = gather_beams(pool, top)
    alive_score, keep = jax.lax.top_k(jnp.where(is_eos, NEG_INF, scores), k)
    new_alive = gather_beams(seqs, keep)
    parent = jnp.take_along_axis(from_beam, keep, axis=1)

    # Rows inside their prompt (decoder) or already past their end keep their state.
    active = ((position >= starts) & (position < ends))[:, None]
    if use_cache:
      parent = jnp.where(active, parent, beam_ids[None, :])
      cache = _reorder_cache(cache, (jnp.arange(batch)[:, None] * k + parent).reshape(-1))
    return BeamState(
      alive=jnp.where(active[:, :, None], new_alive, state.alive),
      alive_logp=jnp.where(active, alive_score, state.alive_logp),
      finished=jnp.where(active[:, :, None], top_finished, state.finished),
      finished_score=jnp.where(active, top_finished_score, state.finished_score),
      cache=cache,
    )

  final = jax.lax.fori_loop(0, total - 1, body, initial)
  alive, alive_logp = final.alive, final.alive_logp
  finished, finished_score = final.finished, final.finished_score
  any_finished = finished_score[:, 0] > NEG_INF / 2
  best = jnp.where(any_finished[:, None], finished[:, 0], alive[:, 0])
  # As T5X: a row with no finished beam returns its best live beam with its raw log-probability.
  score = jnp.where(any_finished, finished_score[:, 0], alive_logp[:, 0])
  return _generated(best, starts, max_new_tokens), score


# ---------------------------------------------------------------------------------------------
# Text in, text out.


def pad_prompts(token_lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
  """Token lists -> right-padded [batch, max_len] int32 and lengths [batch]."""
  lengths = np.asarray([len(t) for t in token_lists], np.int32)
  out = np.zeros((len(token_lists), max(1, int(lengths.max()))), np.int32)
  for i, tokens in enumerate(token_lists):
    out[i, : len(tokens)] = tokens
  return out, lengths


def strip_after_eos(tokens: Sequence[int], eos_id: int) -> list[int]:
  out = []
  for token in tokens:
    if token == eos_id or token == 0:
      break
    out.append(int(token))
  return out


def generate_ids(
  model,
  params: Any,
  token_lists: Sequence[Sequence[int]],
  *,
  max_new_tokens: int = 64,
  temperature: float = 0.0,
  top_k: int = 0,
  top_p: float = 1.0,
  num_beams: int = 1,
  alpha: float = DEFAULT_ALPHA,
  seed: int = 0,
  eos_id: int = 1,
  use_cache: bool = True,
) -> np.ndarray:
  """Token-id prompts (decoder) or inputs (encoder-decoder) -> [batch, new] generated ids.

  A decoder with learned positions generates at most max_length - 1 - longest prompt tokens.
  """
  if not token_lists:
    raise ValueError("no prompts to generate from")
  for i, tokens in enumerate(token_lists):
    if len(tokens) == 0:
      raise ValueError(f"prompt {i} is empty (encodes to no tokens)")
  longest = max(len(t) for t in token_lists)
  config = model.config
  if config.position == "learned":
    positions = config.max_length - getattr(config, "position_offset", 0)  # RoBERTa/BART offset
    room = positions - (1 if _is_encoder_decoder(model) else 1 + longest)
    if _is_encoder_decoder(model) and longest > positions:
      raise ValueError(f"input of {longest} tokens is over model.max_length={config.max_length}")
    max_new_tokens = min(max_new_tokens, room)
    if max_new_tokens <= 0:
      raise ValueError(
        f"prompt of {longest} tokens leaves no room in model.max_length={config.max_length}"
      )
  prompts, lengths = pad_prompts(token_lists)
  prompts, lengths = jnp.asarray(prompts), jnp.asarray(lengths)
  if num_beams > 1:
    tokens, _ = beam_search(
      model, params, prompts, lengths, num_beams=int(num_beams), max_new_tokens=max_new_tokens,
      alpha=float(alpha), eos_id=int(eos_id), use_cache=use_cache,
    )  # fmt: skip
  else:
    tokens = generate_tokens(
      model, params, prompts, lengths, jax.random.key(seed), max_new_tokens=max_new_tokens,
      temperature=float(temperature), top_k=int(top_k), top_p=float(top_p), eos_id=int(eos_id),
      use_cache=use_cache,
    )  # fmt: skip
  return np.asarray(jax.device_get(tokens))


def generate_text(
  model,
  params: Any,
  vocabulary,
  prompts: Sequence[str],
  *,
  max_new_tokens: int = 64,
  temperature: float = 0.0,
  top_k: int = 0,
  top_p: float = 1.0,
  num_beams: int = 1,
  alpha: float = DEFAULT_ALPHA,
  seed: int = 0,
  use_cache: bool = True,
) -> list[str]:
  """Continues each text prompt (decoder) or maps each input text (encoder-decoder; EOS is
  appended as in training); returns the generated text (without the prompt)."""
  for prompt in prompts:
    if not prompt.strip():
      raise ValueError(f"prompt {prompt!r} is empty")
  eos_id = getattr(vocabulary, "eos_id", 1)
  token_lists = [list(vocabulary.encode(p)) for p in prompts]
  for prompt, tokens in zip(prompts, token_lists):
    if not tokens:
      raise ValueError(f"prompt {prompt!r} encodes to no tokens")
  if _is_encoder_decoder(model):
    token_lists = [t + [eos_id] for t in token_lists]
  generated = generate_ids(
    model, params, token_lists, max_new_tokens=max_new_tokens, temperature=temperature,
    top_k=top_k, top_p=top_p, num_beams=num_beams, alpha=alpha, seed=seed, eos_id=eos_id,
    use_cache=use_cache,
  )  # fmt: skip
  outputs = [strip_after_eos(row, eos_id) for row in generated]
  if _is_encoder_decoder(model):
    return [vocabulary.decode(ids) for ids in outputs]
  return [_continuation(vocabulary, prompt, ids) for prompt, ids in zip(token_lists, outputs)]


def _continuation(vocabulary, prompt_ids: list[int], new_ids: list[int]) -> str:
  """The text `new_ids` add after the prompt. Decoding them alone would drop the space a
  SentencePiece piece carries at its start ('▁is' -> 'is'), gluing words to the prompt."""
  prompt_text = vocabulary.decode(prompt_ids)
  full_text = vocabulary.decode(list(prompt_ids) + list(new_ids))
  if full_text.startswith(prompt_text):
    return full_text[len(prompt_text) :]
  return vocabulary.decode(new_ids)
