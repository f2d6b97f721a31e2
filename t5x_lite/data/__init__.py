"""The data layer: vocabularies, sources, preprocessors, registry, feature converters, pipeline."""


class DataError(ValueError):
  """A data problem a user can fix: it names the task, source, file, feature or field at fault.

  The CLI prints these as one line (no traceback); `registry.RegistryError` is one kind.
  """
