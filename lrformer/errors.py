"""The errors a user can cause: each message names the problem and how to fix it.

Every error caused by what the user gave (arguments, configs, files, requests) or by the
conditions they run in (a busy server) is an :class:`LRFormerError`; anything else is a bug. The
command line prints an ``LRFormerError`` as one line, ``lrformer COMMAND: error: ...``, and exits
with code 2 (``--debug`` or ``LRFORMER_DEBUG=1`` adds the traceback); any other exception is
reported as an internal error. ``lrformer serve`` answers an ``LRFormerError`` with its
:attr:`~LRFormerError.http_status` and any other exception with 500.

Each type also subclasses the built-in type callers would otherwise expect, so ``except
ValueError`` (or ``KeyError``, ``FileNotFoundError``, ...) keeps working::

    LRFormerError                                             HTTP
    ├── ConfigError (ValueError)              a config key or value, a command-line value, a model argument
    │   └── UnknownNameError (KeyError)       a name that is none of the known ones (says "Did you mean")
    ├── InputError (ValueError)               an input or output location, image, label map or request
    │   ├── ImageReadError                    not a readable image or video                     415
    │   │   └── ImageTooLargeError            above the pixel limit (a decompression bomb?)     413
    │   ├── UploadTooLargeError               an upload above the server's size limit           413
    │   ├── UploadTimeoutError                an upload that did not arrive in the server's time 408
    │   ├── PictureTooLargeError              a picture to write that its format cannot hold
    │   ├── VideoWriteError                   a video OpenCV cannot encode
    │   └── LabelValueError                   a label value that is no class index nor ignored
    ├── MissingFileError (FileNotFoundError)  a file or folder the user named does not exist
    ├── CheckpointError (ValueError)          a checkpoint that cannot be downloaded, read or used
    │   └── CheckpointMismatchError (RuntimeError)  keys or shapes that differ from the model's
    ├── WorkDirError (RuntimeError)           a training work dir in use, or holding another run
    ├── JobAbortedError (RuntimeError)        another process of a torchrun job failed
    ├── MissingExtraError (ImportError)       an optional dependency that is not installed
    ├── ServerBusyError (RuntimeError)        the server's queue is full                        503
    ├── ServerClosingError (RuntimeError)     the server is shutting down                       503
    ├── DeadlineError (TimeoutError)          a request that waited and ran too long            504
    └── ClientGoneError (ConnectionError)     the client hung up before its answer      (none sent)

The unlisted statuses are 400. Programming errors (a broken invariant, a wrong type passed by
code) stay plain built-in exceptions.
"""

from __future__ import annotations


class LRFormerError(Exception):
    """Base of the errors caused by what the user gave or the conditions they run in, not by a bug.

    ``summary``, when set, is the one-line form of a longer message (e.g. a key-by-key report).
    ``http_status`` is what ``lrformer serve`` answers when a request raises it. ``on_every_rank``
    marks an error that every process of a torchrun job raised alike: only the main one prints it.
    """

    summary: str | None = None
    http_status: int = 400
    on_every_rank: bool = False


class ConfigError(LRFormerError, ValueError):
    """A config key or value, a command-line value, or a model argument that cannot be used."""


class UnknownNameError(ConfigError, KeyError):
    """A name (model, dataset, palette, key) that is none of the known ones; the message says the
    closest one ("Did you mean ...?") and lists them."""

    def __str__(self) -> str:  # the message itself, not KeyError's repr of it
        return str(self.args[0]) if self.args else ""


class InputError(LRFormerError, ValueError):
    """An input or output location, image, label map or request that cannot be used."""


class ImageReadError(InputError):
    """An input that is not a readable image or video; the message names the file and the reason."""

    http_status = 415


class ImageTooLargeError(ImageReadError):
    """An image above the pixel limit (``--max-pixels``), refused from its header before decoding."""

    http_status = 413


class UploadTooLargeError(InputError):
    """An upload above the server's size limit (``--max-upload-mb``)."""

    http_status = 413


class UploadTimeoutError(InputError):
    """An upload whose body did not arrive within the server's upload time (a slow or stalled client)."""

    http_status = 408


class PictureTooLargeError(InputError):
    """A picture to write that is larger than its format can hold (JPEG: 65500 pixels a side)."""


class VideoWriteError(InputError):
    """A video OpenCV cannot encode (e.g. a frame size its MPEG-4 encoder refuses)."""


class LabelValueError(InputError):
    """A label map holds a value that is neither a class index nor the ignore index."""


class MissingFileError(LRFormerError, FileNotFoundError):
    """A file or folder the user named (a config, a checkpoint, a data root) does not exist."""


class CheckpointError(LRFormerError, ValueError):
    """A checkpoint that cannot be downloaded, read or used."""


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """Raised by a strict load when keys or shapes differ; the message lists them all, ``summary``
    says it in one line."""


class WorkDirError(LRFormerError, RuntimeError):
    """A training work dir in use by another run, or holding another run's checkpoints."""


class JobAbortedError(LRFormerError, RuntimeError):
    """Another process of the same torchrun job failed (it says why): this one stops too."""


class MissingExtraError(LRFormerError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


class ServerBusyError(LRFormerError, RuntimeError):
    """The server's queue is full: answered 503 with ``Retry-After``."""

    http_status = 503


class ServerClosingError(LRFormerError, RuntimeError):
    """The server is shutting down and takes no new work."""

    http_status = 503


class DeadlineError(LRFormerError, TimeoutError):
    """A request that waited in the queue and ran longer than the server's timeout (``--timeout``)."""

    http_status = 504


class ClientGoneError(LRFormerError, ConnectionError):
    """The client disconnected before its answer: the work it asked for is dropped, nothing is sent
    (499 is what the server's log calls it)."""

    http_status = 499
