"""`pipeline demo`: the main job end to end on an embedded Ray and a generated sample corpus."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipeline.cli.common import console, print_summary, row_progress


def run_demo(work: Path) -> dict:
    from pipeline.demo.sample_corpus import make_sample_corpus
    from pipeline.inspect import describe_output, describe_sample, plot_sample
    from pipeline.jobs.extract import ExtractConfig, run_extract
    from pipeline.jobs.synth_mix import SynthMixConfig, run_synth_mix
    from stages.visual import VisualConfig, make_tiny_clip

    work = Path(work)
    corpus = work / "corpus"
    if not (corpus / "manifest.parquet").is_file():
        with console.status("generating the sample corpus (ffmpeg + espeak-ng)") as status:
            make_sample_corpus(corpus, progress=lambda clip: status.update(f"generating {clip}"))
    clip_dir = work / "models" / "tiny-clip"
    if not (clip_dir / "config.json").is_file():
        make_tiny_clip(clip_dir)
    console.rule("[bold]1/5 extract")
    config = ExtractConfig(visual=VisualConfig(model_dir=str(clip_dir)), shard_size=8)
    with row_progress("extract") as progress:
        report = run_extract(manifest=corpus / "manifest.parquet", data_root=corpus, out_dir=work / "extract",
                             config=config, progress=progress)
    print_summary(report)
    describe_output(work / "extract")
    plot = plot_sample(describe_sample(work / "extract", None), work / "extract" / "sample.png")

    console.rule("[bold]2/5 synth-mix")
    with row_progress("synth-mix") as progress:
        mix_report = run_synth_mix(speech_dirs=[work / "extract"], sound_dirs=[work / "extract"],
                                   out_dir=work / "mix", config=SynthMixConfig(count=24, shard_size=8),
                                   progress=progress)
    print_summary(mix_report)
    mix_plot = plot_sample(describe_sample(work / "mix", None), work / "mix" / "sample.png")
    wav, mp4 = train_and_generate(work, corpus)
    console.print(f"[bold green]demo done[/]: feature shards in {work / 'extract'}, mixture shards in "
                  f"{work / 'mix'}; pictures of one sample each: {plot}, {mix_plot}; generated {wav} and {mp4}")
    return mix_report


def train_and_generate(work: Path, corpus: Path) -> tuple[Path, Path]:
    """Joint pretraining, joint fine-tuning on the mixtures, then sound+speech for a held-out joint clip.
    The tiny preset (width 128) with its training defaults (lr, warm-up, betas, EMA, batch: model/config.py) and a
    few hundred steps: this shows the chain works; it is no useful model."""
    import json

    import pyarrow.parquet as pq

    from model.generate import generate, mux, write_wav
    from model.train import run_finetune, run_pretrain
    from model.train_config import TrainConfig
    from pipeline.cli.train import print_train_summary, train_progress

    config = TrainConfig(preset="tiny", model_overrides={"width": 128}, num_workers=2, log_every=25, eval_every=100,
                         save_every=100, val_samples=4)
    console.rule("[bold]3/5 pretrain (tiny)")
    with train_progress("pretrain") as progress:
        report = run_pretrain([work / "extract"], work / "runs" / "pretrain", replace(config, steps=300),
                              progress=progress)
    print_train_summary(report)
    console.rule("[bold]4/5 finetune on the mixtures (tiny)")
    with train_progress("finetune") as progress:
        report = run_finetune(work / "runs" / "pretrain" / "ckpt" / "last.pt", [work / "mix"], [],
                              synthetic_ratio=1.0, out=work / "runs" / "finetune", config=replace(config, steps=100),
                              progress=progress)
    print_train_summary(report)
    console.rule("[bold]5/5 generate")
    rows = pq.read_table(corpus / "manifest.parquet").to_pylist()
    expected = json.loads((corpus / "expected.json").read_text())
    clip = next(r for r in rows if r["task"] == "joint" and expected[r["clip_id"]]["outcome"] == "ok")
    wave, info = generate(work / "runs" / "finetune" / "ckpt" / "last.pt", corpus / clip["video_path"],
                          transcript=clip["transcript"], steps=25, method="heun")
    wav = write_wav(work / "generated.wav", wave, 16000)
    muxed = mux(corpus / clip["video_path"], wav, work / "generated.mp4")
    console.print(f"generated {len(wave) / 16000:.2f}s for {clip['clip_id']} ({info.get('task')}): {wav}")
    return wav, Path(muxed.get("path", work / "generated.mp4"))
