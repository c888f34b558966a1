"""The `pipeline` command. Every command has --help with examples."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.common import console

app = typer.Typer(help="VSSFlow data pipeline and trainer: extract -> synth-mix -> pretrain -> finetune -> generate.",
                  no_args_is_help=True, add_completion=False, rich_markup_mode="rich")
run_app = typer.Typer(help="Run a job (embedded Ray by default; --address or RAY_ADDRESS for a cluster).",
                      no_args_is_help=True)
app.add_typer(run_app, name="run")


def _mount_manifest_app() -> None:
    from pipeline.cli.manifest import manifest_app

    app.add_typer(manifest_app, name="manifest", help="Build manifests from corpus layouts; validate them.")


_mount_manifest_app()


def _mount_cluster_commands() -> None:
    from pipeline.cli.cluster import mount

    mount(app)


_mount_cluster_commands()


def _mount_train_commands() -> None:
    from pipeline.cli.train import train_app

    run_app.add_typer(train_app)  # pretrain, finetune, generate join `pipeline run`


_mount_train_commands()


def fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@run_app.command("extract", epilog="""Examples:

  pipeline run extract --manifest data/manifest.parquet --data-root data --out out/extract --visual-model models/clip-vit-base-patch16

  pipeline run extract --manifest m.parquet --data-root /mnt/corpus --out /mnt/shards --config extract.yaml --address ray://head:10001

Re-running the same command resumes: finished shards are kept, only missing work is done; a manifest with new rows adds shards for those rows only.""")
def run_extract_cmd(
    manifest: Path = typer.Option(..., help="Manifest Parquet file (see `pipeline manifest build`)."),
    data_root: Path = typer.Option(..., help="Folder the manifest's paths are relative to."),
    out: Path = typer.Option(..., help="Output folder: shards/, index.parquet, rejects.parquet, report.json, dataset.json."),
    visual_model: Optional[Path] = typer.Option(None, help="Local CLIP directory (Hugging Face layout); overrides the config."),
    vae: Optional[Path] = typer.Option(None, help="Local diffusers AutoencoderKL directory: also store VAE latents."),
    config: Optional[Path] = typer.Option(None, help="YAML config (keys of pipeline.config.ExtractConfig)."),
    shard_size: Optional[int] = typer.Option(None, help="Rows per shard (default 256)."),
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster address; default: embedded Ray."),
) -> None:
    """Extract 10 fps visual features, loudness-normalised audio, log-mel, phonemes (and latents) into shards."""
    from manifests.validate import ManifestError
    from pipeline.cli.common import print_summary, row_progress
    from pipeline.config import ConfigError, ExtractConfig, load_config
    from pipeline.jobs.extract import run_extract
    from pipeline.jobs.runner import OutputBusy
    from stages.format.contract import ContractError
    from stages.model_dir import ModelDirError

    try:
        cfg = load_config(ExtractConfig, config, {"visual.model_dir": str(visual_model) if visual_model else None,
                                                  "latent.vae_dir": str(vae) if vae else None,
                                                  "shard_size": shard_size})
        with row_progress("extract") as progress:
            report = run_extract(manifest=manifest, data_root=data_root, out_dir=out, config=cfg, address=address,
                                 progress=progress)
    except (ManifestError, ConfigError, ContractError, ModelDirError, FileNotFoundError, ValueError,
            OutputBusy) as e:
        fail(str(e))
    print_summary(report)


@run_app.command("synth-mix", epilog="""Examples:

  pipeline run synth-mix --speech out/lrs2 --speech out/ljspeech --sound out/vggsound --out out/mix --count 100000

  pipeline run synth-mix --speech out/lrs2/shards/extract-000003.tar --sound out/vggsound --out out/mix --count 50 --seed 7

Same arguments give the same mixtures; re-running resumes; a larger --count adds mixtures (never changes old ones).""")
def run_synth_mix_cmd(
    speech: list[Path] = typer.Option(..., help="Extract output folder (or one of its shards) with visual_tts/tts samples; repeatable."),
    sound: list[Path] = typer.Option(..., help="Extract output folder (or one of its shards) with v2s samples; repeatable."),
    out: Path = typer.Option(..., help="Output folder for the mixture shards."),
    count: Optional[int] = typer.Option(None, help="Number of mixtures (default 1000)."),
    seed: Optional[int] = typer.Option(None, help="Seed of pairing, offsets, SNRs and modes (default 0)."),
    config: Optional[Path] = typer.Option(None, help="YAML config (keys of pipeline.synth_mix.SynthMixConfig)."),
    vae: Optional[Path] = typer.Option(None, help="The sources' VAE directory, if it moved since extract."),
    shard_size: Optional[int] = typer.Option(None, help="Mixtures per shard (default 256)."),
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster address; default: embedded Ray."),
) -> None:
    """Mix speech over environmental sound at feature level (waveform mix, re-derived mel, mixed visual features)."""
    from pipeline.cli.common import print_summary, row_progress
    from pipeline.config import ConfigError, load_config
    from pipeline.jobs.runner import OutputBusy
    from pipeline.jobs.synth_mix import SynthMixConfig, run_synth_mix
    from stages.format.contract import ContractError

    try:
        cfg = load_config(SynthMixConfig, config, {"count": count, "seed": seed, "shard_size": shard_size,
                                                   "vae_dir": str(vae) if vae else None})
        with row_progress("synth-mix") as progress:
            report = run_synth_mix(speech_dirs=speech, sound_dirs=sound, out_dir=out, config=cfg, address=address,
                                   progress=progress)
    except (ConfigError, ContractError, FileNotFoundError, ValueError, OutputBusy) as e:
        fail(str(e))
    print_summary(report)


mix_app = typer.Typer(help="Work with mixture outputs.", no_args_is_help=True)
app.add_typer(mix_app, name="mix")


@mix_app.command("rebuild", epilog="""Example:

  pipeline mix rebuild out/mix --key mix_s0_000000042""")
def mix_rebuild_cmd(
    out: Path = typer.Argument(..., help="Output folder of a synth-mix job."),
    key: str = typer.Option(..., help="Mixture key (see index.parquet)."),
    vae: Optional[Path] = typer.Option(None, help="The sources' VAE directory, if it moved."),
) -> None:
    """Rebuild one mixture from its recipe and sources; check it equals the stored sample."""
    from rich.table import Table

    from pipeline.jobs.synth_mix import LATENT_TOLERANCE, rebuild_mixture
    from stages.format.contract import ContractError

    try:
        result = rebuild_mixture(out, key, vae_dir=str(vae) if vae else None)
    except (KeyError, ValueError, ContractError, FileNotFoundError) as e:
        fail(str(e))
    table = Table(title=f"rebuild {key}", show_header=False, title_justify="left")
    for member, verdict in result["checks"].items():
        table.add_row(member, verdict)
    console.print(table)
    console.print(f"latents are compared within {LATENT_TOLERANCE:g}; everything else must be bit for bit")
    if not result["ok"]:
        fail("the rebuilt mixture differs from the stored one")
    console.print("[bold green]identical[/]")


@app.command("sample-corpus", epilog="""Examples:

  pipeline sample-corpus data/sample            # ~24 good clips + hostile ones, manifest at data/sample/manifest.parquet

  pipeline sample-corpus data/bench --scale 10 --no-bad""")
def sample_corpus_cmd(
    out: Path = typer.Argument(..., help="Folder to create (it becomes the data root)."),
    scale: int = typer.Option(1, help="Multiply the number of good clips."),
    bad: bool = typer.Option(True, help="Include hostile inputs (each has an expected reject reason)."),
    seed: int = typer.Option(0),
) -> None:
    """Generate a small learnable corpus with ffmpeg and espeak-ng: sound, talking-face, TTS and joint clips."""
    from pipeline.demo.sample_corpus import make_sample_corpus

    try:
        with console.status("generating sample corpus") as status:
            manifest = make_sample_corpus(out, seed=seed, scale=scale, include_bad=bad,
                                          progress=lambda clip: status.update(f"generating {clip}"))
    except RuntimeError as e:
        fail(str(e))
    console.print(f"manifest: {manifest}\ndata root: {out}")


@app.command("make-test-models", epilog="""Example:

  pipeline make-test-models models/   # models/tiny-clip, models/tiny-vae""")
def make_test_models_cmd(out: Path = typer.Argument(..., help="Folder for the tiny models.")) -> None:
    """Save tiny RANDOMLY initialised CLIP and VAE models (for tests and the demo only; labelled so in dataset.json)."""
    from stages.latent import make_tiny_vae
    from stages.visual import make_tiny_clip

    clip = make_tiny_clip(out / "tiny-clip")
    vae = make_tiny_vae(out / "tiny-vae")
    console.print(f"visual model: {clip}\nVAE: {vae}")


@app.command("inspect", epilog="""Examples:

  pipeline inspect out/extract

  pipeline inspect out/extract --key v2s_redcircle_000 --plot sample.png""")
def inspect_cmd(
    out: Path = typer.Argument(..., help="Output folder of a job."),
    key: Optional[str] = typer.Option(None, help="Show one sample's fields and shapes."),
    plot: Optional[Path] = typer.Option(None, help="PNG: the sample's mel and visual features on one time axis."),
) -> None:
    """Counts by task, dataset and reject reason; one sample in detail; a picture of its features."""
    from pipeline.inspect import describe_output, describe_sample, plot_sample

    try:
        describe_output(out)
        if key or plot:
            sample = describe_sample(out, key)
            if plot:
                plot_sample(sample, plot)
                console.print(f"plot: {plot}")
    except (FileNotFoundError, KeyError, ValueError) as e:
        fail(str(e))


@app.command("demo", epilog="""Example:

  pipeline demo demo/      # sample corpus + tiny models + extract, all under demo/""")
def demo_cmd(
    out: Path = typer.Argument(Path("demo"), help="Working folder for the demo."),
) -> None:
    """Run the main job end to end on an embedded Ray and a generated sample corpus (tiny random models)."""
    from pipeline.demo.demo import run_demo

    run_demo(out)


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
