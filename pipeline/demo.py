"""`pipeline demo`: the main job end to end on an embedded Ray and a generated sample corpus."""

from __future__ import annotations

from pathlib import Path

from pipeline.console import console, print_summary, row_progress


def run_demo(work: Path) -> dict:
    from pipeline.config import ExtractConfig, VisualConfig
    from pipeline.extract import run_extract
    from pipeline.inspect import describe_output, describe_sample, plot_sample
    from pipeline.sample_corpus import make_sample_corpus
    from pipeline.synth_mix import SynthMixConfig, run_synth_mix
    from stages.visual import make_tiny_clip

    work = Path(work)
    corpus = work / "corpus"
    if not (corpus / "manifest.parquet").is_file():
        with console.status("generating the sample corpus (ffmpeg + espeak-ng)") as status:
            make_sample_corpus(corpus, progress=lambda clip: status.update(f"generating {clip}"))
    clip_dir = work / "models" / "tiny-clip"
    if not (clip_dir / "config.json").is_file():
        make_tiny_clip(clip_dir)
    console.rule("[bold]1/2 extract")
    config = ExtractConfig(visual=VisualConfig(model_dir=str(clip_dir)), shard_size=8)
    with row_progress("extract", total=0) as progress:
        report = run_extract(manifest=corpus / "manifest.parquet", data_root=corpus, out_dir=work / "extract",
                             config=config, progress=progress)
    print_summary(report)
    describe_output(work / "extract")
    plot = plot_sample(describe_sample(work / "extract", None), work / "extract" / "sample.png")

    console.rule("[bold]2/2 synth-mix")
    with row_progress("synth-mix", total=0) as progress:
        mix_report = run_synth_mix(speech_dirs=[work / "extract"], sound_dirs=[work / "extract"],
                                   out_dir=work / "mix", config=SynthMixConfig(count=24, shard_size=8),
                                   progress=progress)
    print_summary(mix_report)
    mix_plot = plot_sample(describe_sample(work / "mix", None), work / "mix" / "sample.png")
    console.print(f"[bold green]demo done[/]: feature shards in {work / 'extract'}, mixture shards in "
                  f"{work / 'mix'}; pictures of one sample each: {plot}, {mix_plot}")
    return mix_report
