"""Error types that hyperkd raises for problems the *user* can fix.

The CLI prints a :class:`HyperKDError` as one line (no traceback) and exits non-zero;
anything else is a bug and is shown with its traceback. Messages name the file, band,
key or field at fault and say what to do about it.
"""

from __future__ import annotations


class HyperKDError(Exception):
    """Base class of every error caused by input, configuration or environment."""


class UnknownComponentError(HyperKDError, KeyError):
    """A registry was asked for a name it does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(HyperKDError):
    """Two providers tried to register the same name in one registry."""


class PluginError(HyperKDError):
    """A plugin failed to import or register."""


class SensorError(HyperKDError):
    """A sensor definition or band selection is inconsistent."""


class WeightsError(HyperKDError):
    """Weights could not be found, read or matched to a model."""


class DataError(HyperKDError):
    """An input product, chip store or label raster is missing or malformed."""


class RecipeError(HyperKDError):
    """A recipe file or a ``--set`` override is malformed or names something unknown."""


class TrainingError(HyperKDError):
    """Training cannot go on (a non-finite loss, say); the message names the step and what to check."""


class RunFolderError(HyperKDError):
    """A run folder (``--out``) is a file, holds another run, or cannot be resumed as asked."""
