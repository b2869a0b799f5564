"""Every error capgap raises for a user to read, in one place.

Each is a :class:`CapgapError`: the ``capgap`` command prints it as one line (``capgap: error:
...``, what went wrong and how to fix it) and exits with status 2, never with a traceback. Library
callers catch ``CapgapError`` (or one kind below) the same way. It lives in ``capgap.envs``, the
package every other one imports, so that any layer can raise any kind.
"""

from __future__ import annotations


class CapgapError(Exception):
    """A user error: bad input or a run that cannot go on as asked; subclasses say what kind."""


class DialError(CapgapError, ValueError):
    """A bad env argument: unknown env or dial, wrong type or out-of-range value, unknown split."""


class UsageError(CapgapError, ValueError):
    """A bad command line or argument (a flag out of range, an unknown rung, an empty sweep)."""


class RunError(CapgapError):
    """A run that cannot start or resume as asked (another run in the out dir, a bad checkpoint,
    a full disk, a path that holds no runs)."""


class InspectError(CapgapError, ValueError):
    """An inspection that cannot be done as asked (an unsupported env, an unknown layer, ...)."""
