"""Built-in tasks: the default pydoc corpus (every objective) and TFDS definitions (c4, wikipedia).

Importing this package registers them; `registry.import_task_modules` does so before any lookup.
"""

from t5x_lite.tasks import pydoc, tfds  # noqa: F401  (registration side effects)
