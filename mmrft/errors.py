"""The errors a user can fix: the CLI prints each as one line (``<label>: <message>``), with the traceback
only under ``mmrft --debug``. Anything else is a bug and keeps its traceback.

``USER_ERRORS`` is the explicit list the CLI treats this way: the ``UserError`` family below,
``data_pipelines.records.RecordError`` (a record that cannot be used; it names the file, line and id),
and the file-system errors that name a path the user gave (a missing train file or checkpoint, an
existing output directory, a folder where a file was expected, a permission problem).
"""

from __future__ import annotations

from data_pipelines.records import RecordError


class UserError(Exception):
    """An error in what the user gave or in what their run did; the message names the field, file,
    record or reward and says what to do."""

    label = "error"


class RewardError(UserError, ValueError):
    """A reward function misbehaved: unknown name, wrong number of scores, a score that is not a finite
    float or None (None = not applicable)."""

    label = "reward error"


class Stalled(UserError, RuntimeError):
    """A watched phase (generation, reward, update, collective, eval) ran past its limit."""

    label = "watchdog"


class RewardTimeout(Stalled, RewardError):
    """One reward call ran past its ``rewards[i].timeout_s``."""

    label = "reward error"


class TrainingDiverged(UserError, RuntimeError):
    """The non-finite guard stopped the run (too many skipped updates, or non-finite weights)."""

    label = "training stopped"


USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    RecordError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def one_line(error: BaseException) -> str:
    """``<label>: <message>`` on one line (newlines inside the message become spaces)."""
    if isinstance(error, UserError):
        label = type(error).label
    elif isinstance(error, RecordError):
        label = "record error"
    else:
        label = "error"
    message = str(error)
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        message = f"{error.strerror}: {error.filename}"
    message = " ".join(part.strip() for part in message.splitlines() if part.strip())
    return f"{label}: {message or type(error).__name__}"
