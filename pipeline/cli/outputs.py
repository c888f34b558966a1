"""Commands that meet users where they are: export a sample to play it, (re)write an output's dataset card, check a
model folder, generate for a whole manifest, and evaluate generated audio."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.common import console, fail, reported_errors, stdout

models_app = typer.Typer(help="Model folders: what they are and which option they fit.", no_args_is_help=True)


def export_cmd(
    out: Path = typer.Argument(..., help="Output folder of an extract or synth-mix job."),
    key: str = typer.Option(..., help="Sample key (see index.parquet, or `pipeline inspect OUT`)."),
    dest: Path = typer.Option(..., "--out", help="Folder for KEY.wav (and KEY.mp4)."),
    data_root: Optional[Path] = typer.Option(None, help="Folder the sample's source video path is relative to (a "
                                             "mixture's: its sound source's); needed for the MP4."),
) -> None:
    """Write a stored sample as KEY.wav and, when it has video, KEY.mp4 (the source picture with the stored audio)."""
    from pipeline.export import export_sample

    with reported_errors(FileNotFoundError, KeyError):
        made = export_sample(out, key, dest, data_root=data_root)
    console.print(f"audio: {made['wav']}" + (f"\nvideo: {made['mp4']}" if made["mp4"] else ""))
    if made["note"]:
        console.print(f"[yellow]note:[/] {made['note']}")


EXPORT_EPILOG = """Examples:

  pipeline export out/extract --key v2s_redcircle_000 --out listen/ --data-root data/sample

  pipeline export out/mix --key mix_s0_000000042 --out listen/ --data-root /data/vggsound"""


def card_cmd(out: Path = typer.Argument(..., help="Output folder of an extract or synth-mix job.")) -> None:
    """Write OUT/README.md (the dataset card: one Hugging Face datasets config per task) and OUT/wids-index.json.
    Jobs write both when they finish; this is for outputs made before."""
    from pipeline.card import write_card

    with reported_errors(FileNotFoundError):
        written = write_card(out)
    for task, splits in written["configs"].items():
        console.print(f"config {task}: " + ", ".join(f"{split} ({len(s)} shards)" for split, s in splits.items()))
    if written["left_out"]:
        console.print(f"[yellow]note:[/] {len(written['left_out'])} shard(s) mix tasks and are in no config "
                      "(listed in the card)")
    console.print(f"card: {Path(out) / 'README.md'}")


CARD_EPILOG = """Example:

  pipeline card out/extract && python -c "import datasets; print(datasets.load_dataset('out/extract', 'tts'))\""""


@models_app.command("check", epilog="""Examples:

  pipeline models check models/clip-vit-base-patch16

  pipeline models check cvssp/audioldm-s-full-v2/vocoder --for vocoder     # a repo id from the local cache""")
def models_check_cmd(
    model: str = typer.Argument(..., help="A model folder, or a Hugging Face repo id in the local cache "
                                "(ORG/NAME, optionally /SUBFOLDER and @REVISION)."),
    role: Optional[str] = typer.Option(None, "--for", help="visual, vae, vocoder, asr or embedding: fail unless "
                                       "it fits that option."),
) -> None:
    """Say what a model folder is and which of the pipeline's model options it fits (exit 1 when none, or not --for)."""
    from pipeline.models import describe_model, roles

    if role is not None and role not in roles():
        fail(f"--for {role!r}: one of {', '.join(roles())}", 2)
    with reported_errors():
        found = describe_model(model)
    lines = [f"{model}", f"  folder: {found['path']}" + ("  (from the Hugging Face cache)" if found["cached"] else ""),
             f"  kind: {found['kind']}, weights {', '.join(found['weights'])}"
             + ("  [RANDOMLY INITIALISED test model]" if found["random_init"] else "")]
    lines += [f"  fits {name}: {what}" for name, what in found["fits"].items()]
    lines += [f"  not {name}: {why}" for name, why in found["misfits"].items()]
    stdout.print("\n".join(lines), markup=False, highlight=False)
    if role is not None and role not in found["fits"]:
        fail(f"{model} does not fit {found['misfits'][role]}")
    if not found["fits"]:
        fail(f"{model} fits none of the pipeline's model options")


def generate_batch_cmd(
    ckpt: Path = typer.Option(..., help="Checkpoint (RUN/ckpt/last.pt)."),
    manifest: Path = typer.Option(..., help="Manifest of the clips to generate for (video, transcript, span)."),
    data_root: Path = typer.Option(..., help="Folder the manifest's media paths are relative to."),
    out: Path = typer.Option(..., help="Folder for KEY.wav per clip and generated.jsonl."),
    vocoder: Optional[Path] = typer.Option(None, help="HiFi-GAN folder (or cached repo id); default Griffin-Lim."),
    steps: int = typer.Option(25, help="Sampler steps (euler, heun; dopri5 chooses its own)."),
    method: str = typer.Option("euler", help="euler, heun or dopri5 (adaptive, rtol = atol = 1e-5)."),
    guidance: float = typer.Option(3.0, help="Classifier-free guidance scale."),
    seed: int = typer.Option(0, help="Noise seed (the same for every clip, as `generate` uses it)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N rows."),
    visual_model: Optional[Path] = typer.Option(None, help="Visual encoder folder, if it moved since extract."),
    vae: Optional[Path] = typer.Option(None, help="VAE folder for latent checkpoints, if it moved."),
    speaker_ref: Optional[Path] = typer.Option(None, help="Reference recording (wav) of the voice for every row."),
    lip: bool = typer.Option(True, "--lip/--no-lip", help="--no-lip masks every row's mouth stream (an ablation)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Generate audio for every row of a manifest with one loaded model (what `run evaluate` measures)."""
    from model.generate_batch import generate_batch

    with reported_errors(FileNotFoundError), console.status("generating") as status:
        result = generate_batch(ckpt, manifest, data_root, out, steps=steps, method=method, guidance=guidance,
                                seed=seed, vocoder_dir=vocoder, visual_model=visual_model, vae_dir=vae,
                                device=device, limit=limit, speaker_ref=speaker_ref, use_lip=lip,
                                progress=lambda e: status.update(f"generating {e['done']}/{e['total']} {e['key']}"))
    console.print(f"{result['generated']} generated, {result['refused']} refused, {result['skipped']} already there "
                  f"-> {out}")
    for key, why in list(result["refusals"].items())[:10]:
        console.print(f"[yellow]refused[/] {key}: {why}")


GENERATE_BATCH_EPILOG = """Example:

  pipeline run generate-batch --ckpt runs/joint/ckpt/last.pt --manifest test.parquet --data-root data --out gen/

  pipeline run generate-batch --ckpt runs/lips/ckpt/last.pt --manifest test.parquet --data-root data --out gen/ \
      --speaker-ref voice.wav --no-lip      # one voice for every row, the mouth stream masked (an ablation)

Each clip is made as `pipeline run generate` makes it. A re-run skips clips already written."""


def evaluate_cmd(
    generated: Path = typer.Option(..., help="Folder of generated KEY.wav files (16 kHz), e.g. from generate-batch."),
    reference: Path = typer.Option(..., help="Output folder (extract or synth-mix) or manifest holding the keys."),
    out: Path = typer.Option(..., help="Folder for metrics.parquet, summary.json and metrics.png."),
    data_root: Optional[Path] = typer.Option(None, help="With a manifest reference: the folder of its media."),
    asr_model: Optional[Path] = typer.Option(None, help="Local speech recogniser (transformers) for WER."),
    embedding_model: Optional[Path] = typer.Option(None, help="Local audio encoder for a Fréchet distance."),
    max_lag: float = typer.Option(1.0, help="Largest audio-visual offset searched (s)."),
) -> None:
    """Measure generated audio against references: mel distance, loudness, speech-span agreement and speaker
    similarity (speech clips), audio-visual offset (video clips); WER, Fréchet distance with local models."""
    from rich.table import Table

    from pipeline.evaluate.run import evaluate

    with reported_errors(FileNotFoundError), console.status("evaluating"):
        summary = evaluate(generated, reference, out, data_root=data_root, asr_model=asr_model,
                           embedding_model=embedding_model, max_lag_s=max_lag)
    table = Table("metric", "mean", "clips", title=f"{summary['clips']} generated clips vs {reference}",
                  title_justify="left")
    for name, value in summary["metrics"].items():
        table.add_row(name, "-" if value["mean"] is None else f"{value['mean']:.4g}", str(value["clips"]))
    if summary["frechet_distance"] is not None:
        table.add_row("frechet_distance", f"{summary['frechet_distance']:.4g}", str(summary["clips"]))
    stdout.print(table)
    for note in summary["notes"]:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"per clip: {out / 'metrics.parquet'}   summary: {out / 'summary.json'}   "
                  f"plot: {out / 'metrics.png'}")


EVALUATE_EPILOG = """Examples:

  pipeline run evaluate --generated gen/ --reference out/extract --out eval/

  pipeline run evaluate --generated gen/ --reference test.parquet --data-root data --out eval/ \\
      --asr-model models/wav2vec2-base-960h --embedding-model models/clap-htsat-unfused"""
