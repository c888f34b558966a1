"""The errors of orchestration (configs, output folders, clusters, schedules), all `PipelineError`s.

The base lives in manifests/errors.py, the lowest layer, so that manifests, stages and model errors derive from it
too; the CLI (pipeline/cli/common.py) catches that base alone and prints its message.
"""

from __future__ import annotations

from manifests.errors import PipelineError, UsageError

__all__ = ["PipelineError", "UsageError", "ConfigError", "OutputBusy", "OutputNotWritable", "ClusterError", "ScheduleError"]


class ConfigError(UsageError):
    """A job config (YAML or --set) with an unknown key, a value of the wrong type, or an impossible value: a usage
    error (exit code 2)."""


class OutputBusy(PipelineError, RuntimeError):
    """Another run holds the output folder's lock."""


class OutputNotWritable(PipelineError):
    """The output folder's disk is full, or the folder is read-only."""


class ClusterError(PipelineError, RuntimeError):
    """The Ray job server cannot be reached, or refused a request."""


class ScheduleError(UsageError):
    """A schedule that cannot be added, read or fired as asked (bad cron, time zone, name, store)."""
