"""One error type for everything a user can get wrong.

Every failure a user can cause (bad input, missing file, unknown op for a target,
device gone) is raised as :class:`EdgesegError` with the problem *and* the fix, so the
CLI can print one clear message and exit non-zero instead of a traceback.
"""

from __future__ import annotations


class EdgesegError(Exception):
    """A user-facing error: ``problem`` says what is wrong, ``fix`` what to do about it."""

    exit_code = 1

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem}\n  fix: {fix}")


class DeviceError(EdgesegError):
    """A remote or local device failed (disconnected, timed out, tool missing)."""

    exit_code = 3


class UsageError(EdgesegError):
    """Bad usage or configuration where a verdict was expected (exit 2, like click's usage
    errors), so CI can tell "could not check" from a real failure (exit 1)."""

    exit_code = 2
