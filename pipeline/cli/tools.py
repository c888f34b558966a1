"""Commands to look at data and try the project: inspect, mix rebuild, sample-corpus, make-test-models, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.common import console, fail, reported_errors

mix_app = typer.Typer(help="Work with mixture outputs.", no_args_is_help=True)


@mix_app.command("rebuild", epilog="""Example:

  pipeline mix rebuild out/mix --key mix_s0_000000042""")
def mix_rebuild_cmd(
    out: Path = typer.Argument(..., help="Output folder of a synth-mix job."),
    key: str = typer.Option(..., help="Mixture key (see index.parquet)."),
    vae: Optional[Path] = typer.Option(None, help="The sources' VAE directory, if it moved."),
) -> None:
    """Rebuild one mixture from its recipe and sources; check it equals the stored sample."""
    from rich.table import Table

    from pipeline.jobs.rebuild import LATENT_TOLERANCE, rebuild_mixture

    with reported_errors(KeyError, ValueError, FileNotFoundError):
        result = rebuild_mixture(out, key, vae_dir=str(vae) if vae else None)
    table = Table(title=f"rebuild {key}", show_header=False, title_justify="left")
    for member, verdict in result["checks"].items():
        table.add_row(member, verdict)
    console.print(table)
    console.print(f"latents are compared within {LATENT_TOLERANCE:g}; everything else must be bit for bit")
    if not result["ok"]:
        fail("the rebuilt mixture differs from the stored one")
    console.print("[bold green]identical[/]")


def inspect_cmd(
    out: Path = typer.Argument(..., help="Output folder of a job."),
    key: Optional[str] = typer.Option(None, help="Show one sample's fields and shapes."),
    plot: Optional[Path] = typer.Option(None, help="PNG: the sample's mel and visual features on one time axis."),
) -> None:
    """Counts by task, dataset and reject reason; one sample in detail; a picture of its features."""
    from pipeline.inspect import describe_output, describe_sample, plot_sample

    with reported_errors(FileNotFoundError, KeyError, ValueError):
        describe_output(out)
        if key or plot:
            sample = describe_sample(out, key)
            if plot:
                plot_sample(sample, plot)
                console.print(f"plot: {plot}")


INSPECT_EPILOG = """Examples:

  pipeline inspect out/extract

  pipeline inspect out/extract --key v2s_redcircle_000 --plot sample.png"""


def sample_corpus_cmd(
    out: Path = typer.Argument(..., help="Folder to create (it becomes the data root)."),
    scale: int = typer.Option(1, help="Multiply the number of good clips."),
    bad: bool = typer.Option(True, help="Include hostile inputs (each has an expected reject reason)."),
    seed: int = typer.Option(0),
) -> None:
    """Generate a small learnable corpus with ffmpeg and espeak-ng: sound, talking-face, TTS and joint clips."""
    from pipeline.demo.sample_corpus import make_sample_corpus

    with reported_errors(RuntimeError), console.status("generating sample corpus") as status:
        manifest = make_sample_corpus(out, seed=seed, scale=scale, include_bad=bad,
                                      progress=lambda clip: status.update(f"generating {clip}"))
    console.print(f"manifest: {manifest}\ndata root: {out}")


SAMPLE_CORPUS_EPILOG = """Examples:

  pipeline sample-corpus data/sample            # ~24 good clips + hostile ones, manifest at data/sample/manifest.parquet

  pipeline sample-corpus data/bench --scale 10 --no-bad"""


def make_test_models_cmd(out: Path = typer.Argument(..., help="Folder for the tiny models.")) -> None:
    """Save tiny RANDOMLY initialised CLIP and VAE models (for tests and the demo only; labelled so in dataset.json)."""
    from stages.latent import make_tiny_vae
    from stages.visual import make_tiny_clip

    clip = make_tiny_clip(out / "tiny-clip")
    vae = make_tiny_vae(out / "tiny-vae")
    console.print(f"visual model: {clip}\nVAE: {vae}")


MAKE_TEST_MODELS_EPILOG = """Example:

  pipeline make-test-models models/   # models/tiny-clip, models/tiny-vae"""


def demo_cmd(out: Path = typer.Argument(Path("demo"), help="Working folder for the demo.")) -> None:
    """Run the main job end to end on an embedded Ray and a generated sample corpus (tiny random models)."""
    from pipeline.demo.demo import run_demo

    with reported_errors():
        run_demo(out)


DEMO_EPILOG = """Example:

  pipeline demo demo/      # sample corpus + tiny models + extract, synth-mix, pretrain, finetune, generate"""
