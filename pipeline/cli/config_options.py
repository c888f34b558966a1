"""The options every job shares for its config: `--config FILE`, `--set KEY=VALUE` and `--print-config`.

`job_config` builds a job's config dataclass from defaults, the file, the job's own options and `--set` (in that
order; pipeline/config.py validates it), and with `--print-config` prints the result as YAML on stdout and ends the
command before any work: that YAML is a valid `--config` file for the same job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import typer

from pipeline.cli.common import reported_errors

SET_OPTION = typer.Option([], "--set", metavar="KEY=VALUE",
                          help="Override one config key (dotted, e.g. visual.batch_frames=32; the value is read as "
                               "YAML: 64, null, [train, valid]); repeatable, applied after --config.")
PRINT_CONFIG_OPTION = typer.Option(False, "--print-config",
                                   help="Print the effective config as YAML (a valid --config file) and exit.")


def job_config(cls, path: Optional[Path], overrides: dict[str, Any], sets: Sequence[str], print_config: bool):
    """The job's config, or (with print_config) its YAML on stdout and the end of the command (exit 0)."""
    from pipeline.config import config_yaml, load_config, parse_assignments

    with reported_errors():
        config = load_config(cls, path, overrides, parse_assignments(sets))
    if print_config:
        typer.echo(config_yaml(config), nl=False)
        raise typer.Exit(0)
    return config
