"""Scaling laws: the fits recover a known law, plans only hold valid configs, and the CLI plans,
runs (resumably), fits and predicts."""

import json
import math
import os

import numpy as np
import pytest

from t5x_lite import cli
from t5x_lite import config as config_lib
from t5x_lite.scaling import fit, plan, report

# Hoffmann et al.'s fitted law (their eq. 10): the synthetic truth.
E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28
G = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))


def true_params_opt(budget):
  return G * (budget / 6) ** (BETA / (ALPHA + BETA))


def synthetic_rows(noise=0.005, seed=0, budgets=(1e18, 3e18, 1e19, 3e19, 1e20), sizes=9):
  """IsoFLOP runs from the law with multiplicative log-normal noise (0.5%)."""
  rng = np.random.default_rng(seed)
  rows = []
  for budget in budgets:
    for factor in np.geomspace(1 / 8, 8, sizes):
      n = true_params_opt(budget) * factor
      d = budget / (6 * n)
      loss = (E + A / n**ALPHA + B / d**BETA) * math.exp(rng.normal(0, noise))
      rows.append(
        {"id": f"{budget:.0e}_{factor:.3f}", "budget": budget, "params": n, "tokens": d,
         "compute": budget, "loss": loss}
      )  # fmt: skip
  return rows


@pytest.mark.parametrize("seed", [0, 1])
def test_fits_recover_a_known_law(seed):
  runs = report.runs_from_rows(synthetic_rows(seed=seed))
  a3 = fit.fit_approach3(runs, bootstrap=0, starts=32)
  assert a3.alpha == pytest.approx(ALPHA, rel=0.05)
  assert a3.beta == pytest.approx(BETA, rel=0.05)
  assert a3.a == pytest.approx(BETA / (ALPHA + BETA), rel=0.05)
  target = 1e21  # a decade past the largest budget fitted
  assert a3.params_opt(target) == pytest.approx(true_params_opt(target), rel=0.10)
  assert a3.tokens_opt(target) * a3.params_opt(target) * 6 == pytest.approx(target, rel=1e-9)
  a2 = fit.fit_approach2(runs, bootstrap=0)
  assert a2.a == pytest.approx(BETA / (ALPHA + BETA), rel=0.05)
  assert a2.a + a2.b == pytest.approx(1.0, abs=1e-9)  # D_opt = C / (6 N_opt)
  assert a2.params_opt(target) == pytest.approx(true_params_opt(target), rel=0.10)
  for minimum in a2.minima:  # each parabola's vertex is near that budget's true optimum
    assert minimum["params_opt"] == pytest.approx(true_params_opt(minimum["budget"]), rel=0.15)


def test_noise_free_fit_is_exact_and_bootstrap_brackets_it():
  runs = report.runs_from_rows(synthetic_rows(noise=0.0))
  a3 = fit.fit_approach3(runs, bootstrap=0, starts=16)
  for found, true in ((a3.E, E), (a3.A, A), (a3.B, B), (a3.alpha, ALPHA), (a3.beta, BETA)):
    assert found == pytest.approx(true, rel=2e-3)
  noisy = fit.fit_approach3(
    report.runs_from_rows(synthetic_rows(noise=0.01)), bootstrap=6, starts=16
  )
  low, high = noisy.intervals["alpha"]
  assert low <= noisy.alpha <= high and high - low > 0


def test_huber_and_gradient_match_definitions():
  r = np.array([-0.01, -5e-4, 0.0, 2e-4, 0.3])
  expected = np.where(np.abs(r) <= 1e-3, 0.5 * r**2, 1e-3 * (np.abs(r) - 0.5e-3))
  np.testing.assert_allclose(fit.huber(r), expected, rtol=1e-12)
  from scipy import optimize

  rng = np.random.default_rng(0)
  log_n, log_d = rng.uniform(10, 20, 20), rng.uniform(15, 25, 20)
  log_loss = rng.uniform(0.5, 1.5, 20)
  theta = np.array([5.0, 6.0, 0.3, 0.4, 0.3])
  error = optimize.check_grad(
    lambda t: fit._objective(t, log_n, log_d, log_loss)[0],
    lambda t: fit._objective(t, log_n, log_d, log_loss)[1],
    theta,
  )
  assert error < 1e-6
  grid = fit._grid_starts()[:50]
  np.testing.assert_allclose(
    fit.grid_objective(grid, log_n, log_d, log_loss),
    [fit._objective(s, log_n, log_d, log_loss)[0] for s in grid],
    rtol=1e-10,
  )


def test_too_little_data_is_a_clear_error():
  rows = synthetic_rows(budgets=(1e18,), sizes=2)
  with pytest.raises(fit.FitError, match="budget 1e.18: an IsoFLOP parabola needs 3 model sizes"):
    fit.fit_approach2(report.runs_from_rows(rows))
  # A budget with too few sizes is left out; the others still give the law.
  mixed = synthetic_rows(budgets=(1e18, 1e19, 1e20)) + synthetic_rows(budgets=(1e21,), sizes=2)
  a2 = fit.fit_approach2(report.runs_from_rows(mixed), bootstrap=0)
  assert [m["budget"] for m in a2.minima] == [1e18, 1e19, 1e20]
  with pytest.raises(fit.FitError, match="at least 5 runs"):
    fit.fit_approach3(report.runs_from_rows(rows))


# ---------------------------------------------------------------------------------------------
# Plans.


@pytest.mark.parametrize(
  "budgets, config, points",
  [
    ([1e13, 3e13, 1e14, 1e15], None, 5),
    ([1e18, 1e20, 1e21, 1e22], "gpt.py:gpt2_small", 7),
  ],
)
def test_plan_points_follow_the_rules_and_validate(budgets, config, points):
  p = plan.make_plan(budgets, points=points, config=config)
  assert {pt.budget for pt in p.points} == set(budgets)
  for budget in budgets:
    mine = [pt for pt in p.points if pt.budget == budget]
    assert 3 <= len(mine) <= points
    assert len({pt.params for pt in mine}) == len(mine)  # distinct sizes
  for pt in p.points:
    s = pt.shape
    assert s.num_layers == max(2, round(s.d_model / 64))
    assert s.d_ff == 4 * s.d_model
    assert s.d_model // s.num_heads == (64 if s.d_model >= 256 else s.d_model // 4)
    assert pt.tokens == pt.steps * p.tokens_per_step
    assert pt.compute == pytest.approx(6 * pt.params * pt.tokens)
    # Rounding to whole steps moves the compute by at most half a step.
    assert abs(pt.compute / pt.budget - 1) <= 0.5 / pt.steps + 1e-12
    config_dict = p.point_config(pt)
    config_lib.validate(config_dict)
    assert config_dict.train.steps == pt.steps
    assert config_dict.model.d_model == s.d_model
  assert plan.Plan.from_json(p.to_json()) == p


def test_matmul_params_count_the_models_matmul_weights():
  """N = layers x (4·d² + 2·d·d_ff) + d·vocab, as the model's own kernels add up."""
  import jax

  from t5x_lite import models

  config = config_lib.get_config("gpt.py:tiny", [("model.d_model", "96"), ("model.d_ff", "384")])
  model = models.build_model(config_lib.model_config(config))
  shapes = {
    name: jax.ShapeDtypeStruct((2, 128), np.int32)
    for name in ("decoder_input_tokens", "decoder_target_tokens", "decoder_segment_ids",
                 "decoder_positions")
  }  # fmt: skip
  shapes["decoder_loss_weights"] = jax.ShapeDtypeStruct((2, 128), np.float32)
  import flax.linen as nn

  params = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), shapes)))
  kernels = sum(
    int(np.prod(leaf.shape))
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    if "kernel" in jax.tree_util.keystr(path)
  )
  embedding = 96 * config.model.vocab_size  # tied: the output projection reuses it
  shape = plan.Shape(d_model=96, num_layers=2, num_heads=4, d_ff=384)
  assert (
    plan.matmul_params(shape, config)
    == kernels + embedding
    == 2 * (4 * 96**2 + 2 * 96 * 384) + 96 * 1024
  )


def test_plan_errors_are_one_line():
  with pytest.raises(plan.PlanError, match="'x' is not a number"):
    plan.parse_budgets("1e13,x")
  with pytest.raises(config_lib.ConfigError, match="scaling plans support decoder"):
    plan.make_plan([1e13], family="encoder")


# ---------------------------------------------------------------------------------------------
# The CLI.


def test_cli_fit_writes_report_plots_and_predicts(tmp_path, capsys):
  sweep = tmp_path / "sweep"
  sweep.mkdir()
  with open(sweep / "results.jsonl", "w") as f:
    for row in synthetic_rows():
      f.write(json.dumps(row) + "\n")
  assert (
    cli.main(["scaling", "fit", str(sweep), "--bootstrap", "4", "--target-budget", "1e21"]) == 0
  )
  out_dir = sweep / "fit"
  for name in ("fit.json", "fit.md", *report.PLOTS):
    assert (out_dir / name).exists(), name
  for name in report.PLOTS:
    assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  saved = json.loads((out_dir / "fit.json").read_text())
  assert saved["approach3"]["alpha"] == pytest.approx(ALPHA, rel=0.05)
  assert "Approach 2" in (out_dir / "fit.md").read_text()
  capsys.readouterr()
  assert cli.main(["scaling", "predict", "--fit", str(sweep), "--budget", "1e21"]) == 0
  predicted = json.loads(capsys.readouterr().out)
  assert predicted["approach3"]["params"] == pytest.approx(true_params_opt(1e21), rel=0.10)
  assert predicted["approach3"]["tokens"] * predicted["approach3"]["params"] * 6 == pytest.approx(
    1e21
  )
  truth = (
    E + A / predicted["approach3"]["params"] ** ALPHA + B / predicted["approach3"]["tokens"] ** BETA
  )
  assert predicted["approach3"]["loss"] == pytest.approx(truth, rel=0.01)


def test_cli_errors_are_one_line(tmp_path, capsys):
  assert cli.main(["scaling", "fit", str(tmp_path)]) == 2
  assert "results.jsonl does not exist" in capsys.readouterr().err
  assert cli.main(["scaling", "plan", "--budgets", "1e13,oops"]) == 2
  assert "'oops' is not a number" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_plan_run_resume(tmp_path, capsys, shared_vocab_workdir):
  """1 budget x 2 sizes of tiny GPTs, ~20 steps each, through the CLI; a second `run` skips
  every finished point. (Plans over several budgets: test_plan_points_follow_the_rules.)"""
  plan_path = str(tmp_path / "plan.json")
  overrides = ["--config.train.batch_size=8", "--config.data.feature_lengths={'targets': 32}",
               "--config.train.eval_steps=2"]  # fmt: skip
  assert cli.main(["scaling", "plan", "--budgets", "3.2e9", "--points", "2", "--span", "2",
                   "--tokens-per-param", "0.1", "--min-steps", "5", "--out", plan_path,
                   *overrides]) == 0  # fmt: skip
  p = plan.Plan.from_json(open(plan_path).read())
  assert len(p.points) == 2 and len({pt.params for pt in p.points}) == 2
  assert max(pt.steps for pt in p.points) <= 80
  sweep = shared_vocab_workdir(str(tmp_path / "sweep"))
  assert cli.main(["scaling", "run", plan_path, "--workdir", sweep]) == 0
  rows = report.read_results(sweep)
  assert sorted(r["id"] for r in rows) == sorted(pt.id for pt in p.points)
  for row in rows:
    assert 2.0 < row["loss"] < 8.0 and math.isfinite(row["bits_per_byte"])
    assert os.path.isdir(os.path.join(sweep, "points", row["id"], "checkpoints"))
    # Same held-out text for every point: bits per byte ∝ loss with one bytes-per-token ratio.
  ratios = [r["loss"] / r["bits_per_byte"] for r in rows]
  assert max(ratios) == pytest.approx(min(ratios), rel=1e-6)
  # loss / bpb = ln 2 · bytes per token: ~3.4 for the 1,024-piece vocabulary on pydoc.
  assert 2.5 * math.log(2) < ratios[0] < 4.5 * math.log(2)
  capsys.readouterr()
  assert cli.main(["scaling", "run", plan_path, "--workdir", sweep]) == 0
  assert "2 done, 0 to run" in capsys.readouterr().out


def test_print_launch_commands_rebuild_each_points_config(tmp_path, capsys):
  import shlex

  plan_path = str(tmp_path / "plan.json")
  assert cli.main(["scaling", "plan", "--budgets", "1e13,3e13", "--points", "3", "--out", plan_path,
                   "--config.train.batch_size=8"]) == 0  # fmt: skip
  p = plan.Plan.from_json(open(plan_path).read())
  capsys.readouterr()
  assert cli.main(["scaling", "run", plan_path, "--workdir", "gs://b/s", "--print-launch"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == len(p.points)
  for line, point in zip(lines, p.points):
    argv = shlex.split(line)
    assert argv[:4] == ["t5x-lite", "train", "--config", p.config]
    assert argv[4:6] == ["--workdir", f"gs://b/s/points/{point.id}"]
    rebuilt = config_lib.get_config(argv[3], config_lib.parse_overrides(argv[6:]))
    assert rebuilt.to_dict() == p.point_config(point).to_dict()
    assert rebuilt.train.batch_size == 8 and rebuilt.train.steps == point.steps
  assert cli.main(["scaling", "run", plan_path, "--workdir", "gs://b/s", "--print-launch",
                   "--tpu-name", "Sweep", "--zone", "us-central2-b",
                   "--accelerator-type", "v4-8"]) == 0  # fmt: skip
  first = shlex.split(capsys.readouterr().out.splitlines()[0])
  name = "sweep-" + p.points[0].id.lower().replace("_", "-").replace(".", "-")
  assert first[:5] == ["t5x-lite", "launch", "up", "--name", name]
