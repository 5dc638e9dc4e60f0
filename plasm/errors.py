"""The failures a PLASM user can fix, as named exceptions: the CLI prints their message on one line (exit 2) and
the job records it without a traceback; any other exception is a bug and is logged with its traceback."""

from __future__ import annotations

from albackend.domain.labelconfig import ConfigError
from albackend.adapters.lsclient import LabelStudioError
from albackend.models.errors import DistilError
from albackend.models.registry import ModelNotFound


class PlasmError(ValueError):
    """The PLASM run cannot start or go on; the message is safe to show to a user (never holds a token)."""


class PlasmConfigError(PlasmError):
    """A bad option: unknown model name, filter, successor, fraction, ... (checked before any training)."""


class SourceError(PlasmError):
    """The data source (LS project or export) cannot be read."""


# Expected failures, each with a one-line message for the user: everything else is logged with a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (PlasmError, ModelNotFound, LabelStudioError, ConfigError, DistilError)
