"""The project's exception hierarchy: every message says what was wrong and what to do."""

from __future__ import annotations


class TriageError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(TriageError):
    """A setting is missing or has a value that cannot be used."""


class StorageError(TriageError):
    """The object store could not durably write or read an object."""


class NotAVolumeError(TriageError):
    """A series cannot be assembled into one 3D volume; the message says why."""


class ModelError(TriageError):
    """A model bundle cannot be loaded or run."""


class DeliveryError(TriageError):
    """A result could not be delivered to the PACS."""
