"""`pipeline run JOB`: the jobs (extract, synth-mix, and the trainer's pretrain, finetune, generate).

`check_job_args` parses a job's arguments without running it: `pipeline submit` and `pipeline schedule` use it so a
typo fails on the laptop, not on the cluster tonight.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import typer

from manifests.errors import UsageError
from pipeline.cli.common import fail, job_progress, print_plan, print_summary, reported_errors, set_log_level
from pipeline.cli.config_options import PRINT_CONFIG_OPTION, SET_OPTION, job_config
from pipeline.cli.train import train_app
from pipeline.jobs.runner import RunOptions

LIMIT = typer.Option(None, "--limit", min=1, help="Take only the first N input rows (to try a config).")
DRY_RUN = typer.Option(False, "--dry-run", help="Print the plan (units, rows, estimated bytes, placement) and "
                       "write nothing.")
MAX_REJECT_FRAC = typer.Option(None, "--max-reject-frac", min=0.0, max=1.0, help="Exit 1 when more than this "
                               "share of the job's rows is rejected (the output and summary are still written).")
LOG_LEVEL = typer.Option("info", "--log-level", help="debug, info, warning or error (job log lines on stderr; "
                         "debug also shows the Ray workers' own output).")


def run_options(*, verify: bool, redo_changed: bool, limit: Optional[int], dry_run: bool) -> RunOptions:
    return RunOptions(verify=verify, redo_changed=redo_changed, limit=limit, dry_run=dry_run)


def finish(report: dict, max_reject_frac: Optional[float]) -> None:
    """Print a run's summary (or a dry run's plan); exit 1 past --max-reject-frac."""
    from pipeline.jobs.runner import reject_share_exceeded

    if report.get("dry_run"):
        print_plan(report)
        return
    print_summary(report)
    problem = reject_share_exceeded(report, max_reject_frac)
    if problem:
        fail(problem)

run_app = typer.Typer(help="Run a job (embedded Ray by default; --address or RAY_ADDRESS for a cluster).",
                      no_args_is_help=True)
run_app.add_typer(train_app)  # pretrain, finetune, generate join `pipeline run`


@run_app.command("extract", epilog="""Examples:

  pipeline run extract --manifest data/manifest.parquet --data-root data --out out/extract --visual-model models/clip-vit-base-patch16

  pipeline run extract --manifest m.parquet --data-root /mnt/corpus --out /mnt/shards --config extract.yaml --address ray://head:10001

  pipeline run extract --manifest m.parquet --data-root /mnt/corpus --out s3://bucket/shards/ljs --visual-model models/clip --dry-run

  pipeline run extract --manifest m.parquet --data-root data --out out/x --config configs/extract.yaml --set shard_size=64 --print-config

Re-running the same command resumes: finished shards are kept (a missing or damaged one is redone), only missing work is done; a manifest with new rows adds shards for those rows only; rows edited since are reported (--redo-changed redoes their shards).""")  # noqa: E501 - examples are kept whole
def run_extract_cmd(
    manifest: Path = typer.Option(..., help="Manifest Parquet file (see `pipeline manifest build`)."),
    data_root: str = typer.Option(..., help="Folder (or object-storage URL) the manifest's paths are relative to."),
    out: str = typer.Option(..., help="Output folder or object-storage URL (s3://bucket/prefix): shards/, index.parquet, rejects.parquet, report.json, dataset.json."),  # noqa: E501
    visual_model: Optional[Path] = typer.Option(None, help="Local CLIP directory (Hugging Face layout); overrides the config."),  # noqa: E501
    vae: Optional[Path] = typer.Option(None, help="Local diffusers AutoencoderKL directory: also store VAE latents."),
    lip_model: Optional[Path] = typer.Option(None, help="Local TorchScript lip encoder: store its features of the "
                                             "mouth crops instead of the crops."),
    sync_model: Optional[Path] = typer.Option(None, help="Local TorchScript synchrony encoder: also store the "
                                              "sync stream."),
    config: Optional[Path] = typer.Option(None, help="YAML config (keys of pipeline.jobs.extract.ExtractConfig)."),
    shard_size: Optional[int] = typer.Option(None, min=1, help="Rows per shard (default 256)."),
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster address; default: embedded Ray."),  # noqa: E501
    verify: bool = typer.Option(False, "--verify", help="Re-read the checksum of every finished shard and redo "
                                "units whose shard is damaged (sizes are always compared)."),
    redo_changed: bool = typer.Option(False, "--redo-changed", help="Redo finished units whose input rows were "
                                      "edited since (otherwise they are only reported)."),
    set_values: List[str] = SET_OPTION,
    print_config: bool = PRINT_CONFIG_OPTION,
    limit: Optional[int] = LIMIT,
    dry_run: bool = DRY_RUN,
    max_reject_frac: Optional[float] = MAX_REJECT_FRAC,
    log_level: str = LOG_LEVEL,
) -> None:
    """Extract 10 fps visual features, loudness-normalised audio, log-mel, phonemes (and latents) into shards."""
    from pipeline.jobs.extract import ExtractConfig, run_extract

    set_log_level(log_level)
    cfg = job_config(ExtractConfig, config, {"visual.model_dir": str(visual_model) if visual_model else None,
                                             "latent.vae_dir": str(vae) if vae else None,
                                             "lip.model_dir": str(lip_model) if lip_model else None,
                                             "sync.model_dir": str(sync_model) if sync_model else None,
                                             "shard_size": shard_size},
                     set_values, print_config)
    with reported_errors(FileNotFoundError, ValueError):
        with job_progress("extract") as progress:
            report = run_extract(manifest=manifest, data_root=data_root, out_dir=out, config=cfg, address=address,
                                 progress=progress, options=run_options(verify=verify, redo_changed=redo_changed,
                                                                        limit=limit, dry_run=dry_run))
    finish(report, max_reject_frac)


@run_app.command("synth-mix", epilog="""Examples:

  pipeline run synth-mix --speech out/lrs2 --speech out/ljspeech --sound out/vggsound --out out/mix --count 100000

  pipeline run synth-mix --speech out/lrs2/shards/extract-000003.tar --sound out/vggsound --out out/mix --count 50 --seed 7

Same arguments give the same mixtures; re-running resumes; a larger --count adds mixtures (never changes old ones).""")  # noqa: E501
def run_synth_mix_cmd(
    speech: list[str] = typer.Option(..., help="Extract output folder or URL (or one of its shards) with visual_tts/tts samples; repeatable."),  # noqa: E501
    sound: list[str] = typer.Option(..., help="Extract output folder or URL (or one of its shards) with v2s samples; repeatable."),  # noqa: E501
    out: str = typer.Option(..., help="Output folder or object-storage URL for the mixture shards."),
    count: Optional[int] = typer.Option(None, min=1, help="Number of mixtures (default 1000)."),
    seed: Optional[int] = typer.Option(None, help="Seed of pairing, offsets, SNRs and modes (default 0)."),
    config: Optional[Path] = typer.Option(None, help="YAML config (keys of pipeline.jobs.synth_mix.SynthMixConfig)."),
    vae: Optional[Path] = typer.Option(None, help="The sources' VAE directory, if it moved since extract."),
    shard_size: Optional[int] = typer.Option(None, min=1, help="Mixtures per shard (default 256)."),
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster address; default: embedded Ray."),  # noqa: E501
    verify: bool = typer.Option(False, "--verify", help="Re-read the checksum of every finished shard and redo "
                                "units whose shard is damaged (sizes are always compared)."),
    redo_changed: bool = typer.Option(False, "--redo-changed", help="Redo finished units whose input rows were "
                                      "edited since (otherwise they are only reported)."),
    set_values: List[str] = SET_OPTION,
    print_config: bool = PRINT_CONFIG_OPTION,
    limit: Optional[int] = LIMIT,
    dry_run: bool = DRY_RUN,
    max_reject_frac: Optional[float] = MAX_REJECT_FRAC,
    log_level: str = LOG_LEVEL,
) -> None:
    """Mix speech over environmental sound at feature level (waveform mix, re-derived mel, mixed visual features)."""
    from pipeline.jobs.synth_mix import SynthMixConfig, run_synth_mix

    set_log_level(log_level)
    cfg = job_config(SynthMixConfig, config, {"count": count, "seed": seed, "shard_size": shard_size,
                                              "vae_dir": str(vae) if vae else None}, set_values, print_config)
    with reported_errors(FileNotFoundError, ValueError):
        with job_progress("synth-mix") as progress:
            report = run_synth_mix(speech_dirs=speech, sound_dirs=sound, out_dir=out, config=cfg, address=address,
                                   progress=progress, options=run_options(verify=verify, redo_changed=redo_changed,
                                                                          limit=limit, dry_run=dry_run))
    finish(report, max_reject_frac)


def known_jobs() -> list[str]:
    """The jobs of `pipeline run`, read from the app itself so a new job is submittable at once."""
    commands = [*run_app.registered_commands, *(c for g in run_app.registered_groups
                                                 for c in g.typer_instance.registered_commands)]
    return sorted(c.name or c.callback.__name__ for c in commands)


def check_job_args(job: str, args: Sequence[str]) -> None:
    """Parse `pipeline run JOB ARGS` without running it; UsageError naming what is wrong."""
    if job not in known_jobs():
        raise UsageError(f"unknown job {job!r}; `pipeline run` has: {', '.join(known_jobs())}")
    run = typer.main.get_command(run_app)
    command = run.get_command(typer.Context(run), job)
    try:
        command.make_context(f"pipeline run {job}", list(args))
    except typer.Exit:
        return  # e.g. --help
    except typer.TyperException as e:  # typer's usage errors (missing or unknown options, bad values)
        raise UsageError(f"pipeline run {job}: {e.format_message()}") from None
