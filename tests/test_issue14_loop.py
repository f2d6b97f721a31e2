"""Issue 14 defects that show only in the training loop: frozen groups, evaluation coverage."""

import jax
import numpy as np
import pytest

from t5x_lite.training import loop
from t5x_lite.training.optimizers import param_path
from t5x_lite.training.setup import RunSetup

QUICK = {
  "train.steps": "2",
  "train.log_every": "1",
  "train.eval_every": "0",
  "train.eval_steps": "1",
  "train.sample_prompt": "",
  "train.batch_size": "8",
}


@pytest.mark.slow
def test_loop_with_frozen_groups_keeps_them_bit_identical(
  tmp_path, shared_vocab_workdir, make_config
):
  """The README's `--config.train.frozen='("encoder/.*",)'` form once crashed in the sharding of
  the optimizer state (an IndexError); the loop now trains and the frozen leaves never move."""
  workdir = shared_vocab_workdir(str(tmp_path / "run"))
  config = make_config(
    "gpt.py:tiny",
    **{**QUICK, "train.frozen": '("decoder/layers/.*",)', "optimizer.warmup_steps": "0"},
  )
  initial = jax.device_get(RunSetup.create(config).init_state().params)
  final = jax.device_get(loop.train_and_evaluate(config, workdir)["params"])
  frozen = moved = 0
  for (path, before), after in zip(
    jax.tree_util.tree_flatten_with_path(initial)[0], jax.tree.leaves(final), strict=True
  ):
    if param_path(path).startswith("decoder/layers/"):
      np.testing.assert_array_equal(after, before)
      frozen += 1
    elif not np.array_equal(after, before):
      moved += 1
  assert frozen > 0 and moved > 0


def _classification_files(tmp_path, n_validation):
  import json

  from t5x_lite.data.tasks import finetune

  paths = {}
  for split, n in (("train", 8), ("validation", n_validation)):
    paths[split] = str(tmp_path / f"{split}.jsonl")
    with open(paths[split], "w") as f:
      for i in range(n):
        f.write(
          json.dumps({"text": f"example number {i} " * (1 + i % 3), "label": str(i % 3)}) + "\n"
        )
  name = f"test_eval_once_{n_validation}"
  finetune.classification_task(name, paths["train"], paths["validation"], labels=["0", "1", "2"])
  return name


@pytest.mark.parametrize("n_validation", [40, 5])
def test_validation_pass_covers_each_example_exactly_once(tmp_path, make_config, n_validation):
  """A 40-line validation file was scored as 64 examples (24 twice) from a stream that repeats
  forever; the evaluation pass now yields each example once, then ends."""
  from t5x_lite.data import pipeline
  from t5x_lite.data.sharded_stream import host_validation_batches
  from t5x_lite.models import build_model

  task = _classification_files(tmp_path, n_validation)
  config = make_config(
    "bert.py:tiny",
    **{
      "data.task": task,
      "data.vocab": "byte",
      "model.head": "classification",
      "model.num_labels": "3",
      "data.feature_lengths": "{'inputs': 64}",
      "model.max_length": "64",
      "train.batch_size": "16",
      "model.vocab_size": "512",
    },
  )
  vocabulary = pipeline.get_vocabulary(config, str(tmp_path))
  converter = build_model(config.model).feature_converter(config.data.pack)
  batches = list(host_validation_batches(config, vocabulary, converter, num_shards=2))
  weights = np.concatenate([b["classification_loss_weights"].reshape(-1) for b in batches])
  labels = np.concatenate([b["classification_labels"].reshape(-1) for b in batches])
  assert all(b["classification_labels"].shape[0] == 16 for b in batches)
  assert weights.sum() == n_validation
  assert sorted(labels[weights > 0].tolist()) == sorted(i % 3 for i in range(n_validation))


def _train_args(workdir, steps=4):
  return [
    "train", "--config", "gpt.py:tiny", "--workdir", workdir, f"--config.train.steps={steps}",
    *[f"--config.{k}={v}" for k, v in QUICK.items() if k != "train.steps"],
  ]  # fmt: skip


@pytest.mark.slow
def test_signals_before_the_first_step_and_ctrl_c(
  tmp_path, shared_vocab_workdir, monkeypatch, capsys
):
  """SIGTERM while compiling exits 0 (was 143); Ctrl-C finishes the step, saves and prints the
  resume command; a second Ctrl-C stops at once (exit 130)."""
  import os
  import signal

  from t5x_lite import checkpoints, cli
  from t5x_lite.data import sharded_stream

  early = shared_vocab_workdir(str(tmp_path / "early"))
  original_init = RunSetup.init_state

  def init_then_sigterm(self):
    os.kill(os.getpid(), signal.SIGTERM)
    return original_init(self)

  monkeypatch.setattr(RunSetup, "init_state", init_then_sigterm)
  assert cli.main(_train_args(early)) == 0
  assert "preempted at step 0" in capsys.readouterr().out
  monkeypatch.setattr(RunSetup, "init_state", original_init)

  ctrl_c = shared_vocab_workdir(str(tmp_path / "ctrl_c"))
  original_next = sharded_stream.HostBatchStream.__next__
  calls = {"n": 0}

  def next_and_interrupt(self, times=1):
    calls["n"] += 1
    if calls["n"] == 3:
      for _ in range(calls.get("signals", 1)):
        os.kill(os.getpid(), signal.SIGINT)
    return original_next(self)

  monkeypatch.setattr(sharded_stream.HostBatchStream, "__next__", next_and_interrupt)
  args = _train_args(ctrl_c)
  assert cli.main(args) == 0
  out = capsys.readouterr().out
  assert "preempted at step 3" in out and "resume with: t5x-lite train --config gpt.py:tiny" in out
  assert checkpoints.open_existing(ctrl_c).all_steps() == [3]

  twice = shared_vocab_workdir(str(tmp_path / "twice"))
  calls.update(n=0, signals=2)
  assert cli.main(_train_args(twice)) == 130
  assert not os.path.exists(os.path.join(twice, "checkpoints", "3"))


def test_resuming_with_more_steps_warns_that_the_schedule_moves(make_config, caplog):
  """Resuming with a larger train.steps stretches a decay that runs until the end: the steps
  already planned get other learning rates. The loop says so and gives the flag that keeps it."""
  import logging

  saved = make_config("gpt.py:tiny", **{"train.steps": "100"})
  longer = make_config("gpt.py:tiny", **{"train.steps": "200"})
  with caplog.at_level(logging.WARNING):
    loop._warn_on_schedule_change(saved, longer, 50)
  assert "ends at step 200 instead of 100" in caplog.text
  assert "--config.optimizer.decay_steps=70" in caplog.text  # 100 - 30 warmup steps
  caplog.clear()
  fixed = make_config("gpt.py:tiny", **{"train.steps": "200", "optimizer.decay_steps": "70"})
  with caplog.at_level(logging.WARNING):
    loop._warn_on_schedule_change(saved, fixed, 50)
  assert caplog.text == ""


def test_a_non_finite_update_from_finite_gradients_is_flagged():
  """The check looked at the loss and the gradient norm only, so an optimizer whose update is
  non-finite (eps=0 on a zero second moment, an infinite learning rate) wrote NaN weights that
  were saved. The step now flags the updated parameters (`params_finite`), in both modes, and
  the loop never saves such a state (test_a_non_finite_update_stops_the_run_unsaved)."""
  import dataclasses

  import jax.numpy as jnp
  import optax
  from flax import linen as nn

  from t5x_lite.config import load_config_file
  from t5x_lite.models import build_model, to_model_config
  from t5x_lite.training import state as state_lib
  from t5x_lite.training import step as step_lib

  config = dataclasses.replace(
    to_model_config(load_config_file("gpt.py:tiny").model),
    vocab_size=40, d_model=16, num_heads=2, d_ff=32, num_layers=1,
  )  # fmt: skip
  model = build_model(config)
  params = nn.unbox(model.init(jax.random.key(0), model.input_shapes(2, {"decoder": 8})))
  tokens = jnp.asarray(np.random.default_rng(0).integers(3, 40, (2, 8)), jnp.int32)
  batch = {
    "decoder_target_tokens": tokens,
    "decoder_input_tokens": jnp.pad(tokens[:, :-1], ((0, 0), (1, 0))),
    "decoder_loss_weights": jnp.ones((2, 8), jnp.float32),
  }
  cases = [(optax.sgd(jnp.inf), skip, False) for skip in (True, False)]
  cases += [(optax.sgd(0.1), skip, True) for skip in (True, False)]
  for optimizer, skip, finite in cases:
    state = state_lib.create(params, optimizer)
    new, metrics = step_lib.train_step(
      state, batch, jax.random.key(1), model=model, optimizer=optimizer, schedule=lambda s: 0.1,
      skip_nonfinite=skip,
    )  # fmt: skip
    assert bool(jnp.isfinite(metrics["grad_norm"][0]))  # the gradients were finite
    assert float(metrics["finite"][0]) == float(finite)
    assert float(metrics["params_finite"][0]) == float(finite)
    assert int(new.skipped_steps) == 0  # the gradients were finite: the update was applied
    leaves = jax.tree.leaves(new.params)
    assert all(bool(jnp.isfinite(p).all()) for p in leaves) == finite
  # A non-finite gradient: skipped (state unchanged) under 'skip', applied under 'stop'.
  nan_batch = dict(batch, decoder_loss_weights=batch["decoder_loss_weights"] * jnp.nan)
  for skip in (True, False):
    optimizer = optax.sgd(0.1)
    state = state_lib.create(params, optimizer)
    new, metrics = step_lib.train_step(
      state, nan_batch, jax.random.key(1), model=model, optimizer=optimizer,
      schedule=lambda s: 0.1, skip_nonfinite=skip,
    )  # fmt: skip
    assert float(metrics["finite"][0]) == 0.0
    assert int(new.skipped_steps) == int(skip)
    same = jax.tree.leaves(jax.tree.map(lambda a, b: bool((a == b).all()), params, new.params))
    assert all(same) == skip


@pytest.mark.slow
def test_skip_gives_up_after_consecutive_non_finite_steps(
  tmp_path, shared_vocab_workdir, make_config, monkeypatch
):
  """Under 'skip' a run with every update refused used to report success; it now stops after
  train.max_consecutive_skips in a row, naming the last (finite) checkpoint."""
  from t5x_lite import checkpoints
  from t5x_lite.data import sharded_stream

  original_next = sharded_stream.HostBatchStream.__next__
  counter = {"n": 0}

  def poisoned_next(self):
    batch = original_next(self)
    counter["n"] += 1
    if counter["n"] >= 3:
      batch["decoder_loss_weights"] = batch["decoder_loss_weights"] * np.nan
    return batch

  monkeypatch.setattr(sharded_stream.HostBatchStream, "__next__", poisoned_next)
  workdir = shared_vocab_workdir(str(tmp_path / "run"))
  config = make_config(
    "gpt.py:tiny",
    **{**QUICK, "train.steps": "8", "train.checkpoint_every": "2",
       "train.max_consecutive_skips": "2"},
  )  # fmt: skip
  with pytest.raises(loop.TrainingError, match="2 consecutive non-finite steps up to step 4"):
    loop.train_and_evaluate(config, workdir)
  checkpointer = checkpoints.open_existing(workdir)
  assert checkpointer.latest_step() <= 4


@pytest.mark.parametrize("mode", ["skip", "stop"])
def test_a_non_finite_update_stops_the_run_unsaved(
  tmp_path, shared_vocab_workdir, make_config, mode
):
  """A learning rate finite in the config (1e39) but infinite in float32: the gradients are
  finite, the update is not. The run stops with one message naming the last checkpoint, and
  no checkpoint holds a non-finite parameter."""
  from t5x_lite import checkpoints

  workdir = shared_vocab_workdir(str(tmp_path / "run"))
  config = make_config(
    "gpt.py:tiny",
    **{**QUICK, "train.steps": "6", "train.checkpoint_every": "2", "train.nonfinite": mode,
       "optimizer.learning_rate": "1e39", "optimizer.warmup_steps": "0"},
  )  # fmt: skip
  match = "made the parameters non-finite" if mode == "skip" else "non-finite loss, gradient or"
  with pytest.raises(loop.TrainingError, match=match) as stopped:
    loop.train_and_evaluate(config, workdir)
  assert "no checkpoint was saved yet" in str(stopped.value)
  with pytest.raises(checkpoints.CheckpointError, match="no complete checkpoint"):
    checkpoints.open_existing(workdir)


def test_version_and_train_help_show_the_override_syntax(capsys):
  from t5x_lite import cli

  for argv in (["--version"], ["train", "--help"]):
    with pytest.raises(SystemExit) as exit_info:
      cli.main(argv)
    assert exit_info.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith("t5x-lite ")
  assert "--config.KEY=VALUE" in out
  assert out.count("t5x-lite train --config") == 2  # two examples


@pytest.mark.parametrize(
  "head,sums,expected",
  [
    ("", {"loss": (4.0, 2.0)}, {"perplexity"}),
    ("", {"loss": (6.0, 2.0), "mlm_loss": (4.0, 2.0), "nsp_accuracy": (1.0, 2.0)},
     {"mlm_perplexity"}),
    ("classification", {"loss": (4.0, 2.0)}, set()),
  ],
)  # fmt: skip
def test_perplexity_only_of_a_language_model_loss(make_config, head, sums, expected):
  """'perplexity' was exp(loss) for classifiers and for BERT's MLM + NSP sum."""
  from t5x_lite.evaluation import evaluator

  overrides = {"model.head": head, "model.num_labels": "2"} if head else {}
  if head:
    overrides["data.feature_lengths"] = "{'inputs': 64}"
  config = make_config("gpt.py:tiny", **overrides)
  results = evaluator.evaluate(
    lambda params, batch: {k: tuple(map(np.float32, v)) for k, v in sums.items()},
    None, config, lambda: iter([{"x": np.zeros((8, 1), np.int32)}]),
    jax.sharding.SingleDeviceSharding(jax.devices()[0]), 0,
  )  # fmt: skip
  assert {k for k in results if "perplexity" in k} == expected
  if "mlm_perplexity" in expected:
    assert results["mlm_perplexity"] == pytest.approx(np.exp(2.0))


def test_a_run_that_fails_before_its_loop_gives_ctrl_c_back(tmp_path, make_config):
  """The loop catches SIGINT/SIGTERM from before compiling; an error before the loop (here: a
  vocabulary file that does not exist) must put the caller's handlers back (a notebook's Ctrl-C)."""
  import signal

  before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
  config = make_config(**{"data.vocab_path": str(tmp_path / "missing.model")})
  with pytest.raises(Exception, match="missing.model"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
