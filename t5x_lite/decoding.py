"""Decoding for the decoder (GPT) family: greedy, temperature, top-k and top-p sampling.

Everything runs in one jitted `lax.while_loop` over positions with the model's KV cache
(`model.init_cache` / `model.decode_step`, see models/decoder.py). Prompts of different
lengths share the loop: a row is *forced* to its prompt token while the position is inside
its prompt and *sampled* after it, so no per-row prefill is needed. With `use_cache=False`
each step recomputes the whole sequence instead (the reference the cache is tested against).

Sequence layout: position 0 holds 0 (the decoder's start token: the feature converter shifts
targets right with 0 at each segment start), then the prompt, then the generated tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

NEG_INF = -1e10


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


@functools.partial(
  jax.jit,
  static_argnames=(
    "model",
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "eos_id",
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
  """Continues each prompt by up to `max_new_tokens` tokens.

  prompts [batch, prompt_len] int32 (right-padded with 0), prompt_lengths [batch].
  Returns [batch, max_new_tokens] int32: the generated tokens, 0 after a row's EOS.
  """
  batch, prompt_len = prompts.shape
  total = 1 + prompt_len + max_new_tokens
  sequence = jnp.zeros((batch, total), jnp.int32).at[:, 1 : 1 + prompt_len].set(prompts)
  starts = 1 + prompt_lengths  # first generated position of each row
  ends = starts + max_new_tokens
  cache = model.init_cache(batch, total) if use_cache else None

  def next_logits(sequence, cache, t):
    if use_cache:
      tokens = jax.lax.dynamic_slice_in_dim(sequence, t, 1, axis=1)  # [batch, 1]
      positions = jnp.full((batch, 1), t, jnp.int32)
      logits, cache = model.decode_step(params, cache, tokens, positions)
      return logits[:, 0], cache
    logits = model.apply_logits(
      params, {"decoder_input_tokens": sequence, "decoder_target_tokens": jnp.ones_like(sequence)}
    )
    return jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False), cache

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
  index = starts[:, None] + jnp.arange(max_new_tokens)[None, :]
  generated = jnp.take_along_axis(sequence, index, axis=1)
  return generated


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
  seed: int = 0,
  use_cache: bool = True,
) -> list[str]:
  """Continues each text prompt; returns the generated text (without the prompt)."""
  token_lists = [list(vocabulary.encode(p)) for p in prompts]
  for prompt, tokens in zip(prompts, token_lists):
    if not tokens:
      raise ValueError(f"prompt {prompt!r} encodes to no tokens")
  max_length = getattr(model.config, "max_length", 0)
  longest = max(len(t) for t in token_lists)
  if model.config.position == "learned" and 1 + longest + max_new_tokens > max_length:
    max_new_tokens = max_length - 1 - longest
    if max_new_tokens <= 0:
      raise ValueError(
        f"prompt of {longest} tokens leaves no room in model.max_length={max_length}"
      )
  prompts_array, lengths = pad_prompts(token_lists)
  eos_id = getattr(vocabulary, "eos_id", 1)
  generated = generate_tokens(
    model,
    params,
    jnp.asarray(prompts_array),
    jnp.asarray(lengths),
    jax.random.key(seed),
    max_new_tokens=max_new_tokens,
    temperature=float(temperature),
    top_k=int(top_k),
    top_p=float(top_p),
    eos_id=int(eos_id),
    use_cache=use_cache,
  )
  generated = np.asarray(jax.device_get(generated))
  return [vocabulary.decode(strip_after_eos(row, eos_id)) for row in generated]


def generate_from_workdir(
  workdir: str,
  prompts: Sequence[str],
  *,
  step: int | None = None,
  max_new_tokens: int = 64,
  temperature: float = 0.0,
  top_k: int = 0,
  top_p: float = 1.0,
  seed: int = 0,
) -> list[str]:
  """Loads a run's checkpoint (latest, or `step`) and continues `prompts`."""
  from t5x_lite import checkpoints  # noqa: PLC0415
  from t5x_lite.data import pipeline  # noqa: PLC0415
  from t5x_lite.training import loop  # noqa: PLC0415

  checkpointer = checkpoints.open_existing(workdir)
  config = checkpointer.restore_config(step)
  if config.model.family == "encoder":
    raise ValueError(
      f"{workdir} holds an encoder (BERT-style) model, which does not generate text; "
      "use `t5x-lite embed` or `predict`"
    )
  model = loop.build_model(config)
  vocabulary = pipeline.get_vocabulary(config, workdir)
  params = load_params(checkpointer, model, config, step)
  return generate_text(
    model,
    params,
    vocabulary,
    prompts,
    max_new_tokens=max_new_tokens,
    temperature=temperature,
    top_k=top_k,
    top_p=top_p,
    seed=seed,
  )


def load_params(checkpointer, model, config, step: int | None = None) -> Any:
  """The params of a checkpoint, on the default device (inference needs no mesh)."""
  import flax.linen as nn  # noqa: PLC0415

  lengths = {k: int(v) for k, v in config.data.feature_lengths.items()}
  converter = model.feature_converter(config.data.pack)
  model_lengths = converter.model_feature_lengths(lengths)
  shapes = model.input_shapes(1, model_lengths)
  abstract = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), shapes))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
    lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), abstract
  )
  return checkpointer.restore_params(abstract, step)
