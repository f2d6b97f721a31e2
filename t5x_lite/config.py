"""Configs: load `path.py:variant`, apply `--config.a.b=value` overrides, validate.

A config file is a Python file with `get_config(arg)` returning an `ml_collections.ConfigDict`.
Files start from `base_config()`, so every valid key exists (with a comment) in one place and
an override of a key that does not exist is an error, not a silent new field.

Validation runs before anything compiles: every problem becomes one `ConfigError` that names
the field, the value found and what was expected.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import ml_collections

from t5x_lite import partitioning
from t5x_lite.configs import CONFIG_DIR
from t5x_lite.errors import ConfigError
from t5x_lite.models.config import (
  ATTENTION_IMPLS,
  ATTENTION_SCALES,
  DROPOUT_PLACEMENTS,
  INIT_SCHEMES,
  ModelConfig,
)
from t5x_lite.training import distill_config

FAMILIES = ("decoder", "encoder", "encoder_decoder")
DEFAULT_CONFIG = "gpt.py:tiny"


def base_config() -> ml_collections.ConfigDict:
  """Every key a config may set, with its default. Config files start from this."""
  config = ml_collections.ConfigDict()

  config.model = ml_collections.ConfigDict(dataclasses.asdict(ModelConfig()))

  config.data = data = ml_collections.ConfigDict()
  data.task = "pydoc_causal_lm"  # registered Task or Mixture name
  data.eval_task = ""  # task for evaluation; '' = same as `task`
  data.task_modules = ()  # importable modules or .py paths that register tasks
  data.feature_lengths = {"targets": 256}  # task feature lengths (before conversion)
  data.pack = True  # pack several examples per sequence (segment ids, positions)
  data.vocab = "sentencepiece"  # 'sentencepiece' (trained on first use) | 'byte'
  data.vocab_size = 1024  # SentencePiece vocabulary size, extra ids included
  data.extra_ids = 100  # sentinel ids <extra_id_0> .. at the top of the vocabulary
  data.vocab_path = ""  # a tokenizer folder or SentencePiece .model; '' = train and cache in
  # workdir (or, with train.init_from, the vocabulary of the run or HF folder started from)
  data.vocab_type = "unigram"  # type trained on first use: 'unigram' | 'bpe' (SentencePiece),
  # 'byte-bpe' (GPT-2 style) | 'wordpiece' (BERT style) (Hugging Face tokenizers)
  data.vocab_fingerprint = ""  # set by the run: its vocabulary's hash; a resume or init_from with
  # a vocabulary of another hash is refused
  data.seed = 0  # shuffling and preprocessing randomness
  data.num_workers = 0  # grain worker processes (0 = in the main process)
  data.num_shards = 0  # logical data shards (0 = the process count at the first start); a resume
  # reads the count saved in the checkpoint, so the stream survives a change of host count
  data.shuffle_buffer = 0  # unused by random-access shuffling; kept for sources that stream

  config.train = train = ml_collections.ConfigDict()
  train.steps = 300  # optimizer steps
  train.batch_size = 16  # global batch size (sequences), across all hosts
  train.microbatches = 1  # gradient accumulation: split each step's batch into k microbatches
  train.seed = 0  # parameter init and dropout
  train.log_every = 20  # metrics to console / metrics.jsonl / TensorBoard every N steps
  train.eval_every = 100  # held-out evaluation every N steps (0 = only at the end)
  train.eval_steps = 0  # batches per evaluation: 0 = the whole validation split, once
  train.checkpoint_every = 100  # save every N steps (and at the end)
  train.keep = 3  # checkpoints kept (the newest N)
  train.keep_every = 0  # also keep every K-th step forever (0 = none)
  train.async_checkpoints = True  # save in a background thread
  train.init_from = ""  # checkpoint dir or workdir to load params from (fine-tuning)
  train.frozen = ()  # regexes of parameter paths not to train
  train.compilation_cache = "workdir"  # persistent XLA cache: 'workdir' ({workdir}/jax_cache) |
  # 'user' (~/.cache/t5x_lite/jax) | a directory | '' (off); JAX_COMPILATION_CACHE_DIR wins
  train.branch_from = ""  # 'WORKDIR:STEP': start from that checkpoint's full state and data
  # position (a WSD decay branch, training/branch.py); ignored once this workdir has a checkpoint
  train.nonfinite = "skip"  # non-finite loss/grads/update: 'skip' the update | 'stop' the run
  train.max_consecutive_skips = 50  # under 'skip': give up (exit non-zero) after this many in a row
  train.ready_timeout = 900  # s to wait for the created state / first step (a failed allocation)
  train.sample_prompt = "The"  # a sample generation is printed at the end ('' = none)
  train.sample_tokens = 32  # length of that sample
  train.profile_steps = ()  # (first, last): jax.profiler trace of those steps in workdir/profile
  train.wandb_project = ""  # also log metrics to this Weights & Biases project ('' = off)
  train.harness_tasks = ""  # few-shot tasks YAML scored at every evaluation ('' = off; decoders)

  config.optimizer = opt = ml_collections.ConfigDict()
  opt.name = "adamw"  # 'adamw' | 'adafactor'
  opt.learning_rate = 3e-3  # peak learning rate (after warmup)
  opt.warmup_steps = 30  # linear warmup from 0 to the peak
  opt.decay = "cosine"  # after warmup: 'cosine' | 'linear' | 'rsqrt' | 'constant' | 'wsd'
  opt.decay_steps = 0  # steps of the decay after warmup; 0 = train.steps - warmup_steps
  opt.end_factor = 0.1  # learning rate at the end of decay, as a fraction of the peak
  opt.wsd_decay_fraction = 0.2  # wsd: the last fraction of train.steps spent decaying
  opt.wsd_decay_shape = "linear"  # wsd: decay shape 'linear' | 'cosine' | 'sqrt' (1 - sqrt x)
  opt.wsd_decay_start = 0  # wsd: step the decay starts (a decay branch); 0 = from the fraction
  opt.weight_decay = 0.1  # decoupled weight decay (not on biases, norms)
  opt.b1 = 0.9  # Adam beta1
  opt.b2 = 0.95  # Adam beta2
  opt.eps = 1e-8  # Adam epsilon
  opt.grad_clip = 1.0  # clip the global gradient norm (0 = off)

  config.mesh = mesh = ml_collections.ConfigDict()
  mesh.preset = ""  # '' (the sizes below) | 'data' | 'fsdp' | 'fsdp+tensor' (partitioning.PRESETS)
  mesh.data = -1  # data-parallel axis size (-1 = the devices left over)
  mesh.fsdp = 1  # fully-sharded data parallel: params and optimizer state sharded
  mesh.tensor = 1  # tensor (model) parallel: heads, mlp, vocab
  mesh.rules = partitioning.DEFAULT_RULES  # logical axis -> mesh axes

  config.distill = distill_config.defaults()  # knowledge distillation (training/distill_config.py)

  config.lock()
  return config


# ---------------------------------------------------------------------------------------------
# Loading and overrides.


def _config_file_and_arg(spec: str) -> tuple[str, str | None]:
  """`path.py[:arg]` -> (an existing file, arg). A path that does not exist is looked up among
  the shipped configs (`t5x_lite/configs/`), as `gpt.py` or, as the docs once wrote it,
  `configs/gpt.py`."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    name = path.removeprefix("configs/").removeprefix("configs" + os.sep)
    candidate = os.path.join(CONFIG_DIR, name)
    if os.sep in name or "/" in name or not os.path.exists(candidate):
      shipped = ", ".join(n for n in sorted(os.listdir(CONFIG_DIR)) if not n.startswith("_"))
      raise ConfigError(
        f"--config: file {path!r} does not exist and is not a shipped config ({shipped}); "
        f"expected e.g. {DEFAULT_CONFIG} or a path to your own file"
      )
    path = candidate
  return path, (arg or None)


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads `path.py[:arg]` by calling its `get_config(arg)`."""
  path, arg = _config_file_and_arg(spec)
  module_name = "t5x_lite_config_" + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # the file itself is broken: say which file
    raise ConfigError(f"--config: could not load {path}: {type(e).__name__}: {e}") from e
  if not hasattr(module, "get_config"):
    raise ConfigError(f"--config: {path} has no get_config(arg) function")
  takes_arg = arg is not None and len(inspect.signature(module.get_config).parameters) > 0
  try:
    config = module.get_config(arg) if takes_arg else module.get_config()
  except Exception as e:  # noqa: BLE001 (any error of the user's get_config: one line, the file)
    where = f"{path}:{arg}" if arg is not None else path
    raise ConfigError(f"--config: {where}: get_config raised {type(e).__name__}: {e}") from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(
      f"--config: {path} get_config returned {type(config).__name__}, "
      "expected an ml_collections.ConfigDict"
    )
  return config


def _parse_value(text: str, current: Any, key: str) -> Any:
  """Parses an override string into the type of the current value."""
  if isinstance(current, bool):
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
      return True
    if lowered in ("false", "0", "no"):
      return False
    raise ConfigError(f"--config.{key}={text}: expected a bool (true/false)")
  if isinstance(current, int):
    try:
      return int(text)
    except ValueError:
      raise ConfigError(f"--config.{key}={text}: expected an int, found {text!r}") from None
  if isinstance(current, float):
    try:
      return float(text)
    except ValueError:
      raise ConfigError(f"--config.{key}={text}: expected a float, found {text!r}") from None
  if isinstance(current, str):
    return text
  # tuples, lists, dicts: a Python literal.
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if isinstance(current, (tuple, list)):  # a bare word for a one-element tuple
      return (text,)
    raise ConfigError(
      f"--config.{key}={text}: expected a Python literal of type {type(current).__name__}"
    ) from None
  if isinstance(current, (tuple, list)) and isinstance(value, str):
    value = (value,)
  if isinstance(current, (tuple, list)) and isinstance(value, list):
    value = tuple(value)
  if isinstance(current, (dict, ml_collections.ConfigDict)) and not isinstance(value, dict):
    raise ConfigError(f"--config.{key}={text}: expected a dict, found {type(value).__name__}")
  return value


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
  """Sets `config.<key>` from the command-line string `text`, type-checked."""
  parts = key.split(".")
  node = config
  for i, part in enumerate(parts[:-1]):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise ConfigError(_unknown_key_message(".".join(parts[: i + 1]), node))
    node = node[part]
  leaf = parts[-1]
  if isinstance(node, dict) and not isinstance(node, ml_collections.ConfigDict):
    current = node.get(leaf, 0)
    node[leaf] = _parse_value(text, current, key)
    return
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise ConfigError(_unknown_key_message(key, node))
  current = node[leaf]
  value = _parse_value(text, current, key)
  with node.unlocked():
    node[leaf] = value


def _unknown_key_message(key: str, node: Any) -> str:
  import difflib

  known = sorted(node.keys()) if isinstance(node, (dict, ml_collections.ConfigDict)) else []
  last = key.split(".")[-1]
  close = difflib.get_close_matches(last, known, n=3)
  hint = f"; did you mean {', '.join(close)}?" if close else ""
  # The right name in another section (e.g. train.lm_loss_weight -> model.lm_loss_weight).
  elsewhere = [
    f"{section}.{last}"
    for section, values in base_config().items()
    if isinstance(values, ml_collections.ConfigDict) and last in values
  ]
  if elsewhere and not close:
    hint = f"; it is config.{' / config.'.join(elsewhere)}"
  return f"unknown config key {key!r}{hint} (known here: {', '.join(known)})"


def parse_overrides(argv: Sequence[str]) -> list[tuple[str, str]]:
  """`--config.a.b=v` / `--config.a.b v` arguments -> [(a.b, v)]."""
  overrides = []
  i = 0
  while i < len(argv):
    arg = argv[i]
    if not arg.startswith("--config."):
      raise ConfigError(
        f"unexpected argument {arg!r} (overrides look like --config.train.steps=20)"
      )
    body = arg[len("--config.") :]
    if "=" in body:
      key, value = body.split("=", 1)
    else:
      if i + 1 >= len(argv):
        raise ConfigError(f"{arg}: missing value")
      key, value = body, argv[i + 1]
      i += 1
    overrides.append((key, value))
    i += 1
  return overrides


def get_config(
  spec: str = DEFAULT_CONFIG,
  overrides: Sequence[tuple[str, str]] = (),
  *,
  validate_config: bool = True,
) -> ml_collections.ConfigDict:
  """Loads a config file, applies overrides (type-checked) and validates the result."""
  config = load_config_file(spec)
  _check_against_base(config)
  for key, value in overrides:
    apply_override(config, key, value)
  if validate_config:
    validate(config)
  return config


def _check_against_base(config: ml_collections.ConfigDict) -> None:
  """A config file may only set keys that base_config() defines, with compatible types."""
  base = base_config()

  def walk(node, reference, prefix):
    for key in node.keys():
      name = f"{prefix}{key}"
      if key not in reference:
        raise ConfigError(_unknown_key_message(name, reference))
      value, ref = node[key], reference[key]
      if isinstance(ref, ml_collections.ConfigDict) and name != "data.feature_lengths":
        walk(value, ref, name + ".")  # feature_lengths is free-form: {'inputs': ...} is valid
      elif not _compatible(value, ref):
        raise ConfigError(
          f"config.{name}={value!r}: expected {type(ref).__name__}, found {type(value).__name__}"
        )

  walk(config, base, "")


def _compatible(value: Any, reference: Any) -> bool:
  if isinstance(reference, bool):
    return isinstance(value, bool)
  if isinstance(reference, float):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(reference, int):
    return isinstance(value, int) and not isinstance(value, bool)
  if isinstance(reference, str):
    return isinstance(value, str)
  if isinstance(reference, (tuple, list)):
    return isinstance(value, (tuple, list))
  if isinstance(reference, (dict, ml_collections.ConfigDict)):
    return isinstance(value, (dict, ml_collections.ConfigDict))
  return True


# ---------------------------------------------------------------------------------------------
# Validation.


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def _one_of(config, field: str, value: Any, choices: Sequence[Any]) -> None:
  _require(
    value in choices, f"config.{field}={value!r}: expected one of {', '.join(map(repr, choices))}"
  )


def _positive(field: str, value: Any) -> None:
  _require(
    isinstance(value, int) and value > 0, f"config.{field}={value!r}: expected a positive int"
  )


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises ConfigError for the first inconsistent value. Needs no jax compile.

  `num_devices`: the global device count, when known (the trainer passes it); the batch must
  split evenly over the data-parallel devices.
  """
  _check_against_base(config)
  m, d, t, o = config.model, config.data, config.train, config.optimizer
  _one_of(config, "model.family", m.family, FAMILIES)
  for field in ("vocab_size", "d_model", "num_heads", "num_layers", "d_ff"):
    _positive(f"model.{field}", m[field])
  if m.head_dim == 0:
    _require(
      m.d_model % m.num_heads == 0,
      f"config.model.num_heads={m.num_heads} does not divide model.d_model={m.d_model} "
      "(set model.head_dim to use a head width other than d_model // num_heads)",
    )
  _one_of(config, "model.dtype", m.dtype, ("float32", "bfloat16"))
  _one_of(config, "model.remat", m.remat, ("none", "minimal", "full"))
  _one_of(config, "model.attention_impl", m.attention_impl, ATTENTION_IMPLS)
  _require(
    isinstance(m.loss_chunk_size, int) and m.loss_chunk_size >= 0,
    f"config.model.loss_chunk_size={m.loss_chunk_size!r}: expected an int >= 0 (0 = off)",
  )
  _require(
    m.loss_chunk_size == 0 or (m.family != "encoder" and not m.head),
    f"config.model.loss_chunk_size={m.loss_chunk_size}: the chunked cross-entropy serves the "
    f"language-model loss of 'decoder' and 'encoder_decoder' models, not family={m.family!r} "
    f"head={m.head!r}",
  )
  _one_of(config, "model.position", m.position, ("learned", "relative", "rope", "alibi"))
  _one_of(config, "model.activation", m.activation, ("gelu", "gelu_new", "relu", "gated-gelu"))
  _one_of(config, "model.norm", m.norm, ("layernorm", "rmsnorm"))
  _one_of(config, "model.norm_position", m.norm_position, ("pre", "post"))
  _require(
    0.0 <= m.dropout_rate < 1.0, f"config.model.dropout_rate={m.dropout_rate}: expected [0, 1)"
  )
  _one_of(config, "model.head", m.head, ("", "classification", "token_classification"))
  if m.head:
    _require(
      isinstance(m.num_labels, int) and m.num_labels >= 2,
      f"config.model.num_labels={m.num_labels!r}: model.head={m.head!r} needs at least 2 labels",
    )
    _require(
      m.family != "encoder_decoder",
      f"config.model.head={m.head!r}: encoder-decoder models fine-tune as text-to-text (labels "
      "as target text, data.tasks.finetune.text_to_text_task); heads exist for 'encoder' and 'decoder'",
    )
    _require(
      m.head != "token_classification" or m.family == "encoder",
      f"config.model.head='token_classification' needs model.family='encoder', found {m.family!r}",
    )
  _require(m.lm_loss_weight >= 0, f"config.model.lm_loss_weight={m.lm_loss_weight}: expected >= 0")
  _one_of(config, "model.prefix_attention", m.prefix_attention, ("", "bidirectional", "causal"))
  _one_of(config, "model.init_scheme", m.init_scheme, ("",) + INIT_SCHEMES)
  _one_of(config, "model.attention_scale", m.attention_scale, ("",) + ATTENTION_SCALES)
  _one_of(config, "model.dropout_placement", m.dropout_placement, ("",) + DROPOUT_PLACEMENTS)
  _require(
    m.vocab_pad_multiple >= 0,
    f"config.model.vocab_pad_multiple={m.vocab_pad_multiple}: expected 0 (none) or a multiple",
  )
  _require(
    m.vocab_pad_multiple <= 1 or m.label_smoothing == 0,
    "config.model.label_smoothing > 0 would put probability on the padded vocabulary rows of "
    f"model.vocab_pad_multiple={m.vocab_pad_multiple}: use one or the other",
  )

  _require(
    m.head_dim >= 0, f"config.model.head_dim={m.head_dim}: expected >= 0 (0 = d_model // num_heads)"
  )
  _require(d.num_workers >= 0, f"config.data.num_workers={d.num_workers}: expected >= 0")
  _require(t.keep_every >= 0, f"config.train.keep_every={t.keep_every}: expected >= 0 (0 = none)")
  _one_of(config, "data.vocab", d.vocab, ("sentencepiece", "byte"))
  _one_of(config, "data.vocab_type", d.vocab_type, ("unigram", "bpe", "byte-bpe", "wordpiece"))
  if d.vocab_type == "byte-bpe" and d.vocab == "sentencepiece" and not d.vocab_path:
    _require(
      d.vocab_size >= d.extra_ids + 5 + 256,
      f"config.data.vocab_size={d.vocab_size}: a byte-bpe vocabulary needs at least "
      f"{d.extra_ids + 5 + 256} ids (5 special + 256 bytes + {d.extra_ids} extra ids)",
    )
  _require(bool(d.task), "config.data.task is empty: expected a registered task name")
  lengths = dict(d.feature_lengths)
  _require(bool(lengths), "config.data.feature_lengths is empty: expected e.g. {'targets': 256}")
  for name, length in lengths.items():
    _positive(f"data.feature_lengths.{name}", length)
  if m.head:
    suggested = min(max(lengths.values()), m.max_length) if lengths else m.max_length
    _require(
      "inputs" in lengths,
      f"config.data.feature_lengths={lengths}: a model.head={m.head!r} model reads the task "
      f"feature 'inputs'; add --config.data.feature_lengths=\"{{'inputs': {suggested}}}\"",
    )
  if m.position == "learned":
    longest = max(lengths.values()) + m.position_offset
    _require(
      longest <= m.max_length,
      f"config.data.feature_lengths={lengths}: sequence length {longest} is over "
      f"model.max_length={m.max_length} learned positions",
    )
  # With train.init_from or distill.teacher and no vocab_path, the vocabulary is that run's.
  if d.vocab == "sentencepiece" and not (d.vocab_path or t.init_from or config.distill.teacher):
    _require(
      d.vocab_size > d.extra_ids + 3,
      f"config.data.vocab_size={d.vocab_size}: expected more than extra_ids + 3 = {d.extra_ids + 3}",
    )
    _require(
      m.vocab_size >= d.vocab_size,
      f"config.model.vocab_size={m.vocab_size} is smaller than data.vocab_size={d.vocab_size}: "
      "the embedding needs a row for every token id",
    )
  if d.vocab == "byte":
    _require(
      m.vocab_size >= 259 + d.extra_ids,
      f"config.model.vocab_size={m.vocab_size}: the byte vocabulary needs at least "
      f"{259 + d.extra_ids} ids (3 special + 256 bytes + {d.extra_ids} extra ids)",
    )

  for field in ("steps", "batch_size", "log_every", "checkpoint_every", "keep", "microbatches"):
    _positive(f"train.{field}", t[field])
  _require(
    isinstance(t.eval_steps, int) and t.eval_steps >= 0,
    f"config.train.eval_steps={t.eval_steps!r}: expected >= 0 (0 = the whole validation split)",
  )
  _require(t.eval_every >= 0, f"config.train.eval_every={t.eval_every}: expected >= 0")
  _one_of(config, "train.nonfinite", t.nonfinite, ("skip", "stop"))
  _positive("train.max_consecutive_skips", t.max_consecutive_skips)
  _positive("train.ready_timeout", t.ready_timeout)
  _require(
    not t.harness_tasks or os.path.isfile(t.harness_tasks),
    f"config.train.harness_tasks={t.harness_tasks!r}: no such file (a few-shot tasks YAML)",
  )
  profile = tuple(t.profile_steps)
  _require(
    not profile or (len(profile) == 2 and all(isinstance(s, int) for s in profile)
                    and 1 <= profile[0] <= profile[1]),
    f"config.train.profile_steps={profile}: expected () or (first, last) with 1 <= first <= last",
  )  # fmt: skip
  _require(
    t.batch_size % t.microbatches == 0,
    f"config.train.batch_size={t.batch_size} is not divisible by train.microbatches={t.microbatches}",
  )

  _one_of(config, "optimizer.name", o.name, ("adamw", "adafactor"))
  _one_of(config, "optimizer.decay", o.decay, ("cosine", "linear", "rsqrt", "constant", "wsd"))
  _validate_wsd(config)
  _require(
    math.isfinite(o.learning_rate) and o.learning_rate > 0,
    f"config.optimizer.learning_rate={o.learning_rate}: expected a finite number > 0",
  )
  _require(o.warmup_steps >= 0, f"config.optimizer.warmup_steps={o.warmup_steps}: expected >= 0")
  _require(
    o.decay_steps >= 0,
    f"config.optimizer.decay_steps={o.decay_steps}: expected >= 0 (0 = until train.steps)",
  )
  _require(
    math.isfinite(o.grad_clip) and o.grad_clip >= 0,
    f"config.optimizer.grad_clip={o.grad_clip}: expected >= 0 (0 = no clipping)",
  )
  for name in ("b1", "b2"):
    _require(0.0 <= o[name] < 1.0, f"config.optimizer.{name}={o[name]}: expected [0, 1)")
  _require(
    math.isfinite(o.weight_decay) and o.weight_decay >= 0,
    f"config.optimizer.weight_decay={o.weight_decay}: expected >= 0",
  )
  _require(
    math.isfinite(o.eps) and o.eps > 0,
    f"config.optimizer.eps={o.eps}: expected > 0 (Adam divides by sqrt(v) + eps)",
  )
  _require(
    0.0 <= o.end_factor <= 1.0, f"config.optimizer.end_factor={o.end_factor}: expected [0, 1]"
  )

  distill_config.validate(config)
  partitioning.check_mesh(config, num_devices)
  if num_devices is not None:
    sizes = partitioning.resolve_mesh_shape(config, num_devices)
    data_parallel = sizes["data"] * sizes["fsdp"]
    per_step = t.batch_size // t.microbatches
    _require(
      per_step % data_parallel == 0,
      f"config.train.batch_size={t.batch_size} (per microbatch {per_step}) is not divisible "
      f"by the {data_parallel} data-parallel devices (mesh data={sizes['data']} x fsdp={sizes['fsdp']})",
    )


def _validate_wsd(config: ml_collections.ConfigDict) -> None:
  """The WSD keys: a fraction in [0, 1], a known shape, a decay start inside the run."""
  o, steps = config.optimizer, config.train.steps
  _require(
    0.0 <= o.wsd_decay_fraction <= 1.0,
    f"config.optimizer.wsd_decay_fraction={o.wsd_decay_fraction}: expected [0, 1]",
  )
  _one_of(config, "optimizer.wsd_decay_shape", o.wsd_decay_shape, ("linear", "cosine", "sqrt"))
  _require(
    o.wsd_decay_start >= 0, f"config.optimizer.wsd_decay_start={o.wsd_decay_start}: expected >= 0"
  )
  if o.decay != "wsd":
    return
  start = o.wsd_decay_start or steps - round(steps * o.wsd_decay_fraction)
  _require(
    o.warmup_steps <= start <= steps,
    f"config.optimizer: the WSD decay starts at step {start} (wsd_decay_start="
    f"{o.wsd_decay_start}, wsd_decay_fraction={o.wsd_decay_fraction}), expected between "
    f"optimizer.warmup_steps={o.warmup_steps} and train.steps={steps}",
  )


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
  """The frozen ModelConfig for `config.model`.

  `model.prefix_attention=''` (auto) resolves as SeqIO picks its converter: a decoder that reads
  task 'inputs' (a prefix LM, or prompt -> completion fine-tuning) attends over them
  bidirectionally; one trained on targets alone (a causal LM) stays causal everywhere, also
  when `score()` later feeds it prompt + completion.
  """
  values = config.model.to_dict()
  if not values.get("prefix_attention"):
    reads_inputs = "inputs" in dict(config.data.feature_lengths)
    prefix = values["family"] == "decoder" and reads_inputs and not values.get("head")
    values["prefix_attention"] = "bidirectional" if prefix else "causal"
  return ModelConfig(**values)


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def _tuplify(value: Any) -> Any:
  """JSON lists back to the tuples a config holds (nested, e.g. mesh.rules)."""
  if isinstance(value, list):
    return tuple(_tuplify(v) for v in value)
  return value


def from_json(text: str) -> ml_collections.ConfigDict:
  """Rebuilds a config saved with `to_json` (tuples restored where the base has tuples)."""
  saved = json.loads(text)
  config = base_config()

  def fill(node, values, prefix):
    for key, value in values.items():
      if key not in node:
        continue  # a key from an older version: ignore rather than fail to load a checkpoint
      free_form = prefix + key == "data.feature_lengths"  # its keys are not the base's
      if isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, dict):
        if not free_form:
          fill(node[key], value, prefix + key + ".")
          continue
      if isinstance(node[key], tuple) and isinstance(value, list):
        value = _tuplify(value)
      with node.unlocked():
        node[key] = value

  fill(config, saved, "")
  return config
