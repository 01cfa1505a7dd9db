"""Exceptions for a user's mistakes: each message names the problem and how to fix it.

The command line prints any of them as one line, ``lrformer COMMAND: error: ...``, and exits with
code 2 (``--debug`` or ``LRFORMER_DEBUG=1`` adds the traceback). They subclass the built-in type
callers would otherwise expect (``ValueError``, ``FileNotFoundError``, ``RuntimeError``), so
``except ValueError`` keeps working.
"""

from __future__ import annotations


class LRFormerError(Exception):
    """Base of the errors caused by what the user gave (arguments, configs, files), not by a bug.

    ``summary``, when set, is the one-line form of a longer message (e.g. a key-by-key report).
    """

    summary: str | None = None


class ConfigError(LRFormerError, ValueError):
    """A config key or value, or a command-line value, that cannot be used."""


class CheckpointError(LRFormerError, ValueError):
    """A checkpoint that cannot be downloaded, read or used."""


class InputError(LRFormerError, ValueError):
    """An input or output location, image or label map that cannot be used."""


class WorkDirError(LRFormerError, RuntimeError):
    """A training work dir in use by another run, or holding another run's checkpoints."""


class MissingExtraError(LRFormerError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""
