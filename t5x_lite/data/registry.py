"""Tasks and Mixtures, their registries, and the import of users' registry files.

A `Task` is a document source, a list of preprocessors (plain functions of
`(examples, context)` with params bound by `functools.partial`), the task features it outputs,
and its evaluation metadata (metric functions, label names). A `Mixture` samples several tasks by
rate. Registries raise on a duplicate name (unless `replace=True`) and, on an unknown one, list
the closest registered names.

This module is mechanism only, as SeqIO's registry: it never imports task definitions. The
built-in ones live in `data/tasks/`; `pipeline.resolve_tasks(config)` imports them together with
the config's own registry files (`import_task_modules`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from t5x_lite.data import DataError
from t5x_lite.data.sources import DocumentSource
from t5x_lite.data.vocabularies import Vocabulary

TASK_FEATURES = ("inputs", "targets", "token_type_ids")


class RegistryError(DataError):
  """An unknown or duplicate Task/Mixture name, or a malformed Task or Mixture definition."""


@dataclasses.dataclass(frozen=True)
class Feature:
  """One task feature: `vocabulary` None means the run's vocabulary (config.data.vocab)."""

  vocabulary: Vocabulary | None = None
  add_eos: bool = True
  required: bool = True


def _check_output_features(name: str, output_features: Any) -> dict[str, Feature]:
  if not isinstance(output_features, Mapping) or not output_features:
    raise RegistryError(
      f"Task {name!r}: output_features must be a non-empty dict of feature name -> Feature, "
      f"found {output_features!r}"
    )
  for feature, spec in output_features.items():
    if feature not in TASK_FEATURES:
      raise RegistryError(
        f"Task {name!r}: output feature {feature!r} is not a task feature; expected one of "
        f"{', '.join(TASK_FEATURES)}"
      )
    if not isinstance(spec, Feature):
      raise RegistryError(
        f"Task {name!r}: output_features[{feature!r}] must be a Feature(...), "
        f"found {type(spec).__name__}"
      )
  return dict(output_features)


@dataclasses.dataclass(frozen=True)
class Task:
  """A named data set: source -> preprocessors -> output features (before conversion)."""

  name: str
  source: DocumentSource
  preprocessors: Sequence[Callable[..., dict]]
  output_features: Mapping[str, Feature]
  metric_fns: Sequence[Callable] = ()  # seqio's fn(targets, predictions) -> {name: value}
  labels: Sequence[str] | None = None  # label names of a classification / tagging task

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      raise RegistryError(f"Task name must be a non-empty string, found {self.name!r}")
    if not isinstance(self.source, DocumentSource):
      raise RegistryError(
        f"Task {self.name!r}: source must be a DocumentSource (see t5x_lite.data.sources), "
        f"found {type(self.source).__name__}"
      )
    for i, fn in enumerate(self.preprocessors):
      if not callable(fn):
        raise RegistryError(f"Task {self.name!r}: preprocessors[{i}]={fn!r} is not callable")
    object.__setattr__(
      self, "output_features", _check_output_features(self.name, self.output_features)
    )
    object.__setattr__(self, "preprocessors", tuple(self.preprocessors))
    if self.labels is not None:
      object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))


@dataclasses.dataclass(frozen=True)
class Mixture:
  """Tasks sampled by rate: `rates` {task: weight}, or `default_rate` for every task."""

  name: str
  tasks: Sequence[str]
  default_rate: float | None = None
  rates: Mapping[str, float] | None = None

  def __post_init__(self):
    tasks = tuple(self.tasks)
    if not tasks:
      raise RegistryError(f"Mixture {self.name!r} has no tasks")
    if (self.rates is None) == (self.default_rate is None):
      raise RegistryError(f"Mixture {self.name!r}: give exactly one of rates= or default_rate=")
    rates = dict(self.rates) if self.rates is not None else dict.fromkeys(tasks, self.default_rate)
    unknown = sorted(set(rates) - set(tasks))
    if unknown:
      raise RegistryError(f"Mixture {self.name!r}: rates for tasks not in the mixture: {unknown}")
    for task in tasks:
      rate = rates.get(task)
      if rate is None or not rate > 0:
        raise RegistryError(
          f"Mixture {self.name!r}: task {task!r} needs a positive rate, found {rate}"
        )
    object.__setattr__(self, "tasks", tasks)
    object.__setattr__(self, "rates", rates)

  def normalized_rates(self) -> list[float]:
    total = sum(self.rates[t] for t in self.tasks)
    return [self.rates[t] / total for t in self.tasks]


class _Registry:
  kind = "entry"

  def __init__(self):
    self._entries: dict[str, Any] = {}

  def add(self, entry: Any, replace: bool = False) -> Any:
    """Registers `entry`; a name already taken raises unless `replace`."""
    if entry.name in self._entries and not replace:
      raise RegistryError(
        f"{self.kind} {entry.name!r} is already registered (remove it first, or add it with "
        "replace=True)"
      )
    self._entries[entry.name] = entry
    return entry

  def get(self, name: str) -> Any:
    if name not in self._entries:
      raise RegistryError(unknown_name_message(name))
    return self._entries[name]

  def names(self) -> list[str]:
    return sorted(self._entries)

  def remove(self, name: str) -> None:
    self._entries.pop(name, None)

  def __contains__(self, name: str) -> bool:
    return name in self._entries


class _TaskRegistry(_Registry):
  kind = "Task"

  def add(self, task: Task, replace: bool = False) -> Task:
    if not isinstance(task, Task):
      raise RegistryError(f"TaskRegistry.add expects a Task, found {type(task).__name__}")
    if task.name in MixtureRegistry:
      raise RegistryError(f"{task.name!r} is already registered as a Mixture")
    return super().add(task, replace)


class _MixtureRegistry(_Registry):
  kind = "Mixture"

  def add(self, mixture: Mixture, replace: bool = False) -> Mixture:
    if not isinstance(mixture, Mixture):
      raise RegistryError(f"MixtureRegistry.add expects a Mixture, found {type(mixture).__name__}")
    if mixture.name in TaskRegistry:
      raise RegistryError(f"{mixture.name!r} is already registered as a Task")
    missing = [t for t in mixture.tasks if t not in TaskRegistry]
    if missing:
      raise RegistryError(f"Mixture {mixture.name!r}: {unknown_name_message(missing[0])}")
    return super().add(mixture, replace)


TaskRegistry = _TaskRegistry()
MixtureRegistry = _MixtureRegistry()


def unknown_name_message(name: str) -> str:
  known = TaskRegistry.names() + MixtureRegistry.names()
  close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
  hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
  listing = (
    ", ".join(known) if len(known) <= 20 else f"{len(known)} names, see `t5x-lite tasks list`"
  )
  return (
    f"no Task or Mixture named {name!r}{hint} (registered: {listing}; registry files are "
    "imported from config.data.task_modules)"
  )


def get_task_or_mixture(name: str) -> Task | Mixture:
  if name in TaskRegistry:
    return TaskRegistry.get(name)
  if name in MixtureRegistry:
    return MixtureRegistry.get(name)
  raise RegistryError(unknown_name_message(name))


def tasks_of(name: str) -> tuple[list[Task], list[float]]:
  """The tasks of a Task (itself, rate 1) or a Mixture, with normalized rates."""
  entry = get_task_or_mixture(name)
  if isinstance(entry, Task):
    return [entry], [1.0]
  return [TaskRegistry.get(t) for t in entry.tasks], entry.normalized_rates()


_imported_paths: dict[str, str] = {}


def import_task_modules(modules: Sequence[str] = ()) -> None:
  """Imports each registry file (a module name or a `.py` path) once, and nothing else."""
  for module in modules:
    if module.endswith(".py") or os.sep in module:
      path = os.path.abspath(os.path.expanduser(module))
      if path in _imported_paths:
        continue
      if not os.path.exists(path):
        raise FileNotFoundError(
          f"config.data.task_modules: registry file {module!r} does not exist"
        )
      name = "t5x_lite_user_tasks_" + os.path.splitext(os.path.basename(path))[0]
      spec = importlib.util.spec_from_file_location(name, path)
      loaded = importlib.util.module_from_spec(spec)
      sys.modules[name] = loaded
      try:
        spec.loader.exec_module(loaded)
      except Exception as e:  # noqa: BLE001 (the user's file: one line naming it)
        del sys.modules[name]
        where = f" (line {e.lineno})" if isinstance(e, SyntaxError) else ""
        raise RegistryError(
          f"config.data.task_modules: registry file {module}{where} raised {type(e).__name__}: {e}"
        ) from e
      _imported_paths[path] = name
    else:
      try:
        importlib.import_module(module)
      except ModuleNotFoundError as e:
        raise RegistryError(
          f"config.data.task_modules: cannot import {module!r} ({e}); give an importable "
          "module name or a path to a .py file"
        ) from e
      except RegistryError:
        raise
      except Exception as e:  # noqa: BLE001 (the user's module: one line naming it)
        raise RegistryError(
          f"config.data.task_modules: module {module!r} raised {type(e).__name__}: {e}"
        ) from e
