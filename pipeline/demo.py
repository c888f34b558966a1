"""`pipeline demo`: the main job end to end on an embedded Ray and a generated sample corpus."""

from __future__ import annotations

from pathlib import Path

from pipeline.console import console, print_summary, row_progress


def run_demo(work: Path) -> dict:
    from pipeline.config import ExtractConfig, VisualConfig
    from pipeline.extract import run_extract
    from pipeline.inspect import describe_output, describe_sample, plot_sample
    from pipeline.sample_corpus import make_sample_corpus
    from stages.visual import make_tiny_clip

    work = Path(work)
    corpus = work / "corpus"
    if not (corpus / "manifest.parquet").is_file():
        with console.status("generating the sample corpus (ffmpeg + espeak-ng)") as status:
            make_sample_corpus(corpus, progress=lambda clip: status.update(f"generating {clip}"))
    clip_dir = work / "models" / "tiny-clip"
    if not (clip_dir / "config.json").is_file():
        make_tiny_clip(clip_dir)
    console.rule("[bold]1/1 extract")
    config = ExtractConfig(visual=VisualConfig(model_dir=str(clip_dir)), shard_size=8)
    with row_progress("extract", total=0) as progress:
        report = run_extract(manifest=corpus / "manifest.parquet", data_root=corpus, out_dir=work / "extract",
                             config=config, progress=progress)
    print_summary(report)
    describe_output(work / "extract")
    plot = plot_sample(describe_sample(work / "extract", None), work / "extract" / "sample.png")
    console.print(f"[bold green]demo done[/]: shards in {work / 'extract'}, a picture of one sample in {plot}")
    return report
