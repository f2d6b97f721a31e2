"""Scaling laws: plan an IsoFLOP sweep, run it, fit Chinchilla's laws, predict a budget.

  plan.py     model shapes from written-down width/depth/heads rules; an IsoFLOP grid of
              (shape, tokens) per compute budget, every point a validated config
  run.py      the sweep, one training run per point, resumable; results.jsonl
  fit.py      approach 2 (IsoFLOP parabolas) and approach 3 (parametric L(N, D), Huber on
              log-loss, L-BFGS from a grid of starts), bootstrap confidence intervals
  report.py   JSON + Markdown report and PNG plots
  cli.py      `t5x-lite scaling plan|run|fit|predict`

Conventions (docs/scaling.md): N counts the weights of every matmul applied per token (the
layers and the output projection onto the vocabulary; not embedding lookups, biases or norms),
i.e. training FLOPs per token = 6·N + attention; compute C = 6·N·D with D training tokens.
"""
