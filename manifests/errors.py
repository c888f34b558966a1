"""The one base of every error a user should see as a message, not a traceback.

It lives in the lowest layer (manifests <- stages <- model <- pipeline) so that every layer's domain errors can
derive from it without an import pointing upwards; `pipeline/errors.py` adds the orchestration errors and the
CLI catches `PipelineError` alone. A `PipelineError` says what is wrong and what to do; its `exit_code` is 2 for a
usage error (a bad argument, config or input file: the command cannot start) and 1 for a runtime failure.
"""

from __future__ import annotations


class PipelineError(Exception):
    """A failure with a message meant for the person who ran the command."""

    exit_code = 1
    __str__ = Exception.__str__   # the message as written, also when a subclass is a KeyError (which quotes it)


class UsageError(PipelineError, ValueError):
    """The command was asked for something it cannot do as given (bad option, config key, or input)."""

    exit_code = 2
