"""`pipeline run pretrain | finetune | generate`: the trainer's commands.

They parse options into a TrainConfig (model/train.py) and run the loop in this process, or in Ray Train workers
with --num-workers (pipeline/train_launch.py); progress and a summary are shown here.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import typer

from pipeline.cli.common import console, fail, reported_errors
from pipeline.cli.config_options import PRINT_CONFIG_OPTION, SET_OPTION, job_config

train_app = typer.Typer(help="Train VSSFlow on shards and generate audio with it.", no_args_is_help=True)

# Ray Train wraps a worker's exception in one of these; its message is what the person needs.
RAY_TRAIN_FAILURES = ("TrainingFailedError", "WorkerGroupError", "ControllerError")


# ----------------------------------------------------------------------------------------------------------------------
# What a person sees


@contextmanager
def train_progress(description: str, sources: Optional[dict[str, str]] = None
                   ) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A progress bar for a run; its start event prints what the run trains with (`training_rows`). sources: which
    fields the command set, and how ("flag" or "config")."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
               TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[val]}"),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=None, loss="-", val="", rate="")

        def update(event: dict[str, Any]) -> None:
            if event["event"] == "start":
                for name, text in training_rows(event["training"], sources or {}):
                    progress.console.print(f"[bold]{name}:[/] {text}", highlight=False)
            elif event["event"] == "log":
                progress.update(task, total=event["steps"], completed=event["step"], loss=f"{event['loss']:.4f}",
                                rate=f"{event['steps_per_s']:.2f} steps/s, {event['samples_per_s']:.1f} samples/s")
            elif event.get("val_loss") is not None:
                progress.update(task, val=f"val {event['val_loss']:.4f}")

        yield update


LABELS = {"lr": "lr", "warmup_steps": "warm-up", "betas": "betas", "ema_decay": "EMA decay", "batch_size": "batch"}


def training_rows(training: dict[str, Any], sources: dict[str, str]) -> list[tuple[str, str]]:
    """(name, text) rows: each preset-dependent value with where it came from (preset, config, flag), the
    learning-rate schedule, and the schedule's warnings."""
    parts = []
    for name, value in training["values"].items():
        origin = training["origins"].get(name, "set")
        if origin == "set":
            origin = sources.get(name, "as the run started")
        elif origin.startswith("preset"):
            origin = origin.replace("preset", f"preset {training['preset']}", 1)
        shown = "/".join(f"{v:g}" for v in value) if name == "betas" else f"{value:g}"
        if name == "ema_decay" and not training["ema"]:
            shown, origin = "off", sources.get("ema", "config")
        parts.append(f"{LABELS[name]} {shown} ({origin})")
    rows = [("training", ", ".join(parts)), ("schedule", training["schedule"])]
    return rows + [("warning", note) for note in training["notes"]]


def print_train_summary(report: dict[str, Any], sources: Optional[dict[str, str]] = None) -> None:
    from rich.table import Table

    from model.ema import describe_span

    def num(x, fmt=".4f"):
        return "-" if x is None else format(x, fmt)

    table = Table(title=f"{report['job']} -> {report['out']}", show_header=False, title_justify="left")
    table.add_row("steps", f"{report['steps']}  (this run {report['steps_this_run']}, from {report['start_step']})")
    table.add_row("loss", f"train {num(report['loss'])}, validation {num(report['val_loss'])}"
                          + (f", validation (EMA) {num(report['val_loss_ema'])}" if report.get("val_loss_ema") else ""))
    for name, text in training_rows(report["training"], sources or {}):
        table.add_row(name, f"[bold yellow]{text}[/]" if name == "warning" else text)
    table.add_row("EMA", describe_span(report["ema"]) if report.get("ema") else "none (ema: false)")
    table.add_row("speed", f"{num(report['steps_per_s'], '.2f')} steps/s, {num(report['samples_per_s'], '.1f')} "
                           f"samples/s, {num(report['data_wait_frac'] and 100 * report['data_wait_frac'], '.0f')}% "
                           f"of the time waiting for data")
    from model.config import DiTConfig

    conditions = DiTConfig.from_dict(report["model"]).conditions()
    table.add_row("model", f"{report['parameters'] / 1e6:.2f}M parameters on {report['world_size']} x "
                           f"{report['device']}; conditions: {', '.join(conditions)}")
    table.add_row("data", report["sources"])
    table.add_row("time", f"{report['wall_s']:.1f}s")
    console.print(table)
    console.print(f"checkpoint: {report['checkpoint']}   metrics: {report['metrics']}   "
                  f"report: {Path(report['out']) / 'report.json'}")


def _config(path: Optional[Path], flags: dict[str, Any], sets: List[str], print_config: bool):
    """The TrainConfig of defaults <- the YAML file <- the flags and --set values given, and how this command set each
    field it set: {"lr": "flag", "warmup_steps": "config", ...}."""
    from model.train_config import TrainConfig
    from pipeline.config import parse_assignments, read_yaml

    cfg = job_config(TrainConfig, path, flags, sets, print_config)
    sources = {key: "config" for key in read_yaml(path)} if path is not None else {}
    sources.update({key.split(".")[0]: "flag" for key in parse_assignments(sets)})
    sources.update({key: "flag" for key, value in flags.items() if value is not None})
    return cfg, sources


def _train(job: str, num_workers: int, use_gpu: bool, address: Optional[str], sources: dict[str, str],
           **kwargs: Any) -> None:
    from model.train import run_finetune, run_pretrain
    from pipeline.train_launch import run_distributed

    try:
        with reported_errors(ValueError, FileNotFoundError), train_progress(job, sources) as progress:
            if num_workers > 0:
                report = run_distributed(job, num_workers=num_workers, use_gpu=use_gpu, address=address,
                                         progress=progress, **kwargs)
            else:
                if use_gpu:
                    import torch

                    if not torch.cuda.is_available():
                        fail("--use-gpu, but this process sees no CUDA device")
                    kwargs["config"] = dataclasses.replace(kwargs["config"], device="cuda")
                report = (run_pretrain if job == "pretrain" else run_finetune)(progress=progress, **kwargs)
    except Exception as e:  # noqa: BLE001 - Ray Train wraps a worker's error; show its message, not a driver trace
        if type(e).__name__ in RAY_TRAIN_FAILURES:
            fail(f"training failed in a Ray worker: {e}")
        raise
    print_train_summary(report, sources)


# ----------------------------------------------------------------------------------------------------------------------
# Commands


@train_app.command("pretrain", epilog="""Examples:

  pipeline run pretrain --data out/vggsound --data out/lrs2 --data out/libritts --out runs/pretrain

  pipeline run pretrain --data out/sample --out runs/tiny --preset tiny --steps 500 --batch-size 8

  pipeline run pretrain --data /mnt/a --data /mnt/b --out /mnt/runs/p --config train.yaml --num-workers 8 --use-gpu

Re-running the same command resumes from RUN/ckpt/last.pt (raise --steps to train longer). The config file
holds keys of model.train_config.TrainConfig (lr, warmup_steps, task_weights: {v2s: 1, visual_tts: 1, tts: 0.5}, ...).
lr, warm-up, betas, EMA decay and batch size default to the preset's (model/config.py TRAINING_DEFAULTS; a preset's
warm-up is capped at a tenth of the run); the summary says which values the run used and where each came from.""")
def pretrain_cmd(
    data: List[Path] = typer.Option(..., help="Output folder of an extract job (repeat --data for several)."),
    out: Path = typer.Option(..., help="Run folder: ckpt/last.pt, metrics.jsonl, report.json."),
    preset: Optional[str] = typer.Option(None, help="Model size: tiny, small, base (the paper's; default) or reference "
                                                 "(the authors' shapes)."),
    steps: Optional[int] = typer.Option(None, help="Total optimisation steps (default 100000)."),
    batch_size: Optional[int] = typer.Option(None, help="Samples per step and worker (default: the preset's)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate after warm-up (default: the preset's)."),
    warmup_steps: Optional[int] = typer.Option(None, help="Linear warm-up steps (default: the preset's, capped "
                                               "at a tenth of the run)."),
    ema: Optional[bool] = typer.Option(None, "--ema/--no-ema", help="Keep an EMA of the weights (default: yes)."),
    ema_decay: Optional[float] = typer.Option(None, help="EMA decay once warmed up (default: the preset's)."),
    config: Optional[Path] = typer.Option(None, help="YAML file of TrainConfig keys (model/train_config.py)."),
    loader_workers: Optional[int] = typer.Option(None, help="DataLoader processes per training worker (default 2)."),
    num_workers: int = typer.Option(0, help="Ray Train workers (0: train in this process)."),
    use_gpu: bool = typer.Option(False, help="One GPU per training worker (or this process's GPU)."),
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster for --num-workers; "
                                          "default: an embedded Ray."),
    set_values: List[str] = SET_OPTION,
    print_config: bool = PRINT_CONFIG_OPTION,
) -> None:
    """Joint pretraining on V2S, VisualTTS and TTS shards (task mix by sample count unless task_weights is set)."""
    with reported_errors(ValueError):
        cfg, sources = _config(config, {"preset": preset, "steps": steps, "batch_size": batch_size, "lr": lr,
                                        "warmup_steps": warmup_steps, "ema": ema, "ema_decay": ema_decay,
                                        "num_workers": loader_workers}, set_values, print_config)
    _train("pretrain", num_workers, use_gpu, address, sources, data_dirs=list(data), out=out, config=cfg)


@train_app.command("finetune", epilog="""Examples:

  pipeline run finetune --init runs/pre/ckpt/last.pt --data out/mix --real-joint out/v2c --synthetic-ratio 0.7 \
      --out runs/joint

  pipeline run finetune --init runs/tiny/ckpt/last.pt --data out/mix --out runs/tj --steps 300 --video-frame-mask 0.1

The network and audio normalisation come from --init; the optimiser, EMA and schedule start anew, with the
training values of the init's preset unless set here. Re-running resumes from RUN/ckpt/last.pt.""")
def finetune_cmd(
    init: Path = typer.Option(..., help="Pretraining checkpoint (RUN/ckpt/last.pt)."),
    data: List[Path] = typer.Option(..., help="Output folder of a synth-mix job (repeat for several)."),
    out: Path = typer.Option(..., help="Run folder of the fine-tuning."),
    real_joint: List[Path] = typer.Option([], help="Folder with real joint clips (task 'joint'); repeatable."),
    synthetic_ratio: float = typer.Option(0.5, help="Share of mixture samples in the stream (the rest: real joint)."),
    video_frame_mask: Optional[float] = typer.Option(None, help="Probability of masking each video frame."),
    steps: Optional[int] = typer.Option(None, help="Total optimisation steps."),
    batch_size: Optional[int] = typer.Option(None, help="Samples per step and worker (default: the preset's)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate after warm-up (default: the preset's)."),
    warmup_steps: Optional[int] = typer.Option(None, help="Linear warm-up steps (default: the preset's, capped "
                                               "at a tenth of the run)."),
    config: Optional[Path] = typer.Option(None, help="YAML file of TrainConfig keys (model/train_config.py)."),
    loader_workers: Optional[int] = typer.Option(None, help="DataLoader processes per training worker."),
    num_workers: int = typer.Option(0, help="Ray Train workers (0: train in this process)."),
    use_gpu: bool = typer.Option(False, help="One GPU per training worker (or this process's GPU)."),
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster for --num-workers."),
    set_values: List[str] = SET_OPTION,
    print_config: bool = PRINT_CONFIG_OPTION,
) -> None:
    """Joint sound+speech fine-tuning on synthetic mixtures (and real joint clips) from a pretraining checkpoint."""
    with reported_errors(ValueError):
        cfg, sources = _config(config, {"steps": steps, "batch_size": batch_size, "lr": lr,
                                        "warmup_steps": warmup_steps, "num_workers": loader_workers,
                                        "video_frame_mask_p": video_frame_mask}, set_values, print_config)
    _train("finetune", num_workers, use_gpu, address, sources, init_ckpt=init, mix_dirs=list(data),
           real_joint_dirs=list(real_joint), synthetic_ratio=synthetic_ratio, out=out, config=cfg)


@train_app.command("generate", epilog="""Examples:

  pipeline run generate --ckpt runs/joint/ckpt/last.pt --video clip.mp4 --out clip.wav --mux clip_sound.mp4

  pipeline run generate --ckpt runs/joint/ckpt/last.pt --video face.mp4 --transcript "Hello there." \
      --speech-start 0.4 --speech-end 2.1 --out hello.wav --vocoder models/audioldm/vocoder

  pipeline run generate --ckpt runs/tiny/ckpt/last.pt --transcript "Text only." --duration 3 --out tts.wav

  pipeline run generate --ckpt runs/lips/ckpt/last.pt --video face.mp4 --transcript "Hello there." \
      --speaker-ref voice.wav --out hello.wav          # add --no-lip to hear it without the mouth stream

Conditions are extracted with the checkpoint's own feature contract (same encoder, vocabulary, rates, mouth
finder). A model built for the lip/sync streams takes them from the video; one built with the speaker token takes
--speaker-ref's embedding, or has the token masked without it. Without --vocoder the mel is inverted with
Griffin-Lim.""")
def generate_cmd(
    ckpt: Path = typer.Option(..., help="Checkpoint (RUN/ckpt/last.pt)."),
    out: Path = typer.Option(..., help="Output wav (16 kHz mono)."),
    video: Optional[Path] = typer.Option(None, help="Silent video to generate sound (and speech) for."),
    transcript: Optional[str] = typer.Option(None, help="Text to speak (VisualTTS with --video, TTS without)."),
    speech_start: Optional[float] = typer.Option(None, help="Start of the speech in the clip (s)."),
    speech_end: Optional[float] = typer.Option(None, help="End of the speech in the clip (s)."),
    duration: Optional[float] = typer.Option(None, help="Seconds to generate (default: the video's length)."),
    vocoder: Optional[Path] = typer.Option(None, help="Local SpeechT5HifiGan directory; default Griffin-Lim."),
    mux: Optional[Path] = typer.Option(None, help="Also write the video with the generated sound (ffmpeg)."),
    steps: int = typer.Option(25, help="Sampler steps (euler, heun; dopri5 chooses its own)."),
    method: str = typer.Option("euler", help="euler, heun or dopri5 (adaptive, rtol = atol = 1e-5)."),
    guidance: float = typer.Option(3.0, help="Classifier-free guidance scale (1: none)."),
    seed: int = typer.Option(0, help="Noise seed."),
    visual_model: Optional[Path] = typer.Option(None, help="Visual encoder directory, if it moved since extract."),
    vae: Optional[Path] = typer.Option(None, help="VAE directory for latent checkpoints, if it moved."),
    ema: bool = typer.Option(True, help="Use the EMA weights when the checkpoint has them (else the raw ones)."),
    speaker_ref: Optional[Path] = typer.Option(None, help="Reference recording (wav) of the voice to speak with; "
                                               "embedded as extract embeds a clip's speech."),
    lip: bool = typer.Option(True, "--lip/--no-lip", help="--no-lip masks the mouth stream (an ablation)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Generate 16 kHz audio for a video (V2S), a video and a transcript (VisualTTS), or a transcript (TTS)."""
    from model.generate import generate, write_wav
    from model.generate import mux as mux_video

    if (speech_start is None) != (speech_end is None):
        fail("give both --speech-start and --speech-end, or neither")
    if mux is not None and video is None:
        fail("--mux needs --video")
    span = None if speech_start is None else (speech_start, speech_end)
    start = time.perf_counter()
    with reported_errors(ValueError, FileNotFoundError):
        with console.status("generating"):
            wave, info = generate(ckpt, video, transcript=transcript, speech_span=span, duration=duration,
                                  steps=steps, method=method, guidance=guidance, vocoder_dir=vocoder, seed=seed,
                                  visual_model=visual_model, vae_dir=vae, device=device, use_ema=ema,
                                  speaker_ref=speaker_ref, use_lip=lip)
            write_wav(out, wave, info["sample_rate"])
            muxed = mux_video(video, out, mux) if mux is not None else None
    for warning in info["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"{info['task']}: {info['duration_s']:.2f}s of audio -> {out}  ({info['method']}: "
                  f"{info['solver']['steps']} steps, {info['nfe']} velocity evaluations, guidance {info['guidance']}, "
                  f"vocoder {info['vocoder']['name']}, "
                  f"{time.perf_counter() - start:.1f}s)")
    console.print(f"weights: {info['weights']['description']}", highlight=False)
    for name, used in info["conditions"].items():
        said = used.get("file") or (f"{used['valid_frames']}/{used['frames']} frames valid" if "frames" in used else "")
        console.print(f"{name}: {'used' if used['used'] else 'masked'} {said}"
                      f"{'' if used['used'] else ' (' + used['why'] + ')'}", highlight=False)
    if muxed:
        console.print(f"video: {muxed['path']} (picture {muxed['video']})")
