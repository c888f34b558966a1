"""Connecting to Ray: an embedded local instance by default, a cluster with --address / RAY_ADDRESS."""

from __future__ import annotations

import logging
import os
from typing import Optional


def init_ray(address: Optional[str] = None, *, num_cpus: Optional[int] = None, quiet: bool = True) -> str:
    """Start or join Ray once per process; returns a short description of where we run."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return "ray (already initialised)"
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=not quiet)
        where = f"ray cluster at {address}"
    else:
        # An embedded instance stays on loopback (Ray otherwise picks the machine's other address).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 logging_level=logging.WARNING, log_to_driver=not quiet, configure_logging=True)
        where = f"embedded ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False       # the driver shows one progress bar of its own
    context.print_on_execution_start = False
    context.verbose_progress = False
    return where


def cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))
