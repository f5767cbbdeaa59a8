"""One spec per task (schema check, SFT answer, preview caption, default rewards, evaluation family)
and the registry that maps a record's ``task`` to it; see :mod:`data_pipelines.tasks.base`.

Every module of this package registers its task on import; a new task is one more module like these
(or, from Python, a :func:`register_task` call before the data is read).
"""

import importlib
import pkgutil

from data_pipelines.tasks.base import (
    TASKS,
    TaskSpec,
    get_task,
    reference_answer,
    register_task,
    task_names,
    unregister_task,
)

# The built-in tasks in the order reports list them; any other module in this folder (a new task)
# registers after them, in name order. Adding a task is adding its module: nothing here changes.
ORDER = (
    "classification",
    "counting",
    "grounding",
    "detection",
    "temporal_grounding",
    "tracking",
    "chart_to_code",
)
_found = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")
for _module in sorted(_found, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "TASKS",
    "TaskSpec",
    "get_task",
    "reference_answer",
    "register_task",
    "task_names",
    "unregister_task",
]
