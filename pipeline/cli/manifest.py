"""`pipeline manifest ...`: build manifests from corpus layouts and check them before a job (DESIGN §3)."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import NoReturn, Optional

import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

from manifests.paths import check_media_paths
from manifests.readers import READERS, build_manifest
from manifests.schema import write_manifest
from manifests.validate import ROW_PROBLEMS, ManifestError, read_manifest, row_warnings

manifest_app = typer.Typer(
    help="Build manifests from corpus layouts and validate them.",
    no_args_is_help=True,
)

EXAMPLES_SHOWN = 5

# Which build options each format takes (reader keyword -> CLI option); anything else is refused, not ignored.
FORMAT_OPTIONS = {
    "ljspeech": {"dataset", "split", "data_root"},
    "libritts": {"dataset", "split", "data_root"},
    "vggsound": {"dataset", "split", "data_root", "video_dir", "pattern"},
    "lrs2": {"dataset", "split", "data_root", "media_root", "video_ext"},
    "grid": {"dataset", "split", "data_root", "video_ext", "list_path"},
    "table": {"mapping"},
    "reference": {"dataset", "split", "data_root", "pattern"},
}
OPTION_NAMES = {"dataset": "--dataset", "split": "--split", "data_root": "--data-root", "video_dir": "--video-dir",
                "pattern": "--pattern", "media_root": "--media-root", "video_ext": "--video-ext",
                "list_path": "--list", "mapping": "--map"}


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected COLUMN=VALUE, got {value!r}", param_hint=option)
        out[key.strip()] = val
    return out


@manifest_app.command(
    epilog=(
        "Examples:\n\n"
        "pipeline manifest build ljspeech /data/LJSpeech-1.1 --out ljspeech.parquet\n\n"
        "pipeline manifest build vggsound vggsound.csv --video-dir /data/vggsound/video --out vgg.parquet\n\n"
        "pipeline manifest build lrs2 /data/lrs2/train.txt --media-root /data/lrs2/main --out lrs2.parquet\n\n"
        "pipeline manifest build table clips.csv --map clip_id=id --map video_path=file --set task=v2s "
        "--out m.parquet\n\n"
        "pipeline manifest build reference filelists/train.txt --set task=visual_tts --out ref.parquet"
    ),
)
def build(
    format: str = typer.Argument(..., help=f"Corpus layout: {', '.join(READERS)}."),
    source: Path = typer.Argument(..., help="Corpus folder (ljspeech, libritts, grid) or list/csv/table file."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest Parquet file to write."),
    data_root: Optional[Path] = typer.Option(
        None, help="Write media paths relative to this folder (default: the corpus folder, video dir or media root)."),
    video_dir: Optional[Path] = typer.Option(None, help="vggsound: folder of the pre-cut clips."),
    media_root: Optional[Path] = typer.Option(None, help="lrs2: folder the list's ids are relative to."),
    video_ext: Optional[str] = typer.Option(None, help="lrs2/grid: video file extension (.mp4 / .mpg)."),
    pattern: Optional[str] = typer.Option(
        None, help="vggsound: video file name pattern (default {youtube_id}_{start:06d}.mp4); "
                   "reference: video path pattern from the audio stem, e.g. videos/{stem}.mp4."),
    list_path: Optional[Path] = typer.Option(None, "--list", help="grid: list of SPEAKER/UTTERANCE ids to take."),
    map_: list[str] = typer.Option([], "--map", help="table: manifest_column=source_column (repeatable)."),
    set_: list[str] = typer.Option([], "--set", help="column=value filling empty cells (repeatable), e.g. task=v2s."),
    dataset: Optional[str] = typer.Option(
        None, help="Corpus name for the dataset column (default: the corpus, e.g. lrs2; none for reference)."),
    split: Optional[str] = typer.Option(
        None, help="Split name; vggsound: keep only rows of this split; lrs2: default from the list name."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file."),
) -> None:
    """Build a manifest from a corpus layout; it is validated before it is written."""
    if format not in READERS:
        raise typer.BadParameter(f"unknown format {format!r}; known: {', '.join(READERS)}", param_hint="FORMAT")
    if out.exists() and not force:
        raise typer.BadParameter(f"{out} exists; pass --force to overwrite it", param_hint="--out")
    given = {"dataset": dataset, "split": split, "data_root": data_root, "video_dir": video_dir,
             "media_root": media_root, "video_ext": video_ext, "pattern": pattern, "list_path": list_path,
             "mapping": _pairs(map_, "--map") or None}
    given = {k: v for k, v in given.items() if v is not None}
    refused = sorted(OPTION_NAMES[k] for k in given if k not in FORMAT_OPTIONS[format])
    if refused:
        raise typer.BadParameter(f"{', '.join(refused)} not used by format {format!r}", param_hint="options")
    if "pattern" in given:
        given["filename_pattern" if format == "vggsound" else "video_pattern"] = given.pop("pattern")
    defaults = _pairs(set_, "--set")
    if format == "reference":
        if "task" not in defaults:
            raise typer.BadParameter("reference lists need the task: --set task=v2s|visual_tts|tts|joint",
                                     param_hint="--set")
        given["task"] = defaults.pop("task")
    if format == "vggsound" and "video_dir" not in given:
        raise typer.BadParameter("vggsound needs --video-dir", param_hint="--video-dir")
    if format == "lrs2" and "media_root" not in given:
        raise typer.BadParameter("lrs2 needs --media-root", param_hint="--media-root")

    console = Console(soft_wrap=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = build_manifest(format, source, defaults=defaults or None, **given)
        except ManifestError as e:
            _fail(e)
    for w in caught:
        console.print(f"[yellow]note:[/yellow] {w.message}")
    write_manifest(table, out)
    console.print(f"wrote {out} ({table.num_rows} rows)")
    _print_counts(console, table)
    _print_row_warnings(console, table)


@manifest_app.command(
    epilog=(
        "Examples:\n\n"
        "pipeline manifest validate vgg.parquet\n\n"
        "pipeline manifest validate vgg.parquet --data-root /data/vggsound/video --strict"
    ),
)
def validate(
    manifest: Path = typer.Argument(..., help="Manifest Parquet file (or folder of Parquet files)."),
    data_root: Optional[Path] = typer.Option(
        None, help="Also check that every media path exists and stays under this folder."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 on row warnings and path problems too."),
) -> None:
    """Validate a manifest: schema, tasks, unique clip_ids, per-row warnings, and (with --data-root) media paths.

    Exits 1 when the manifest is invalid (and with --strict when any row has a problem).
    """
    console = Console(soft_wrap=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = read_manifest(manifest)
        except ManifestError as e:
            _fail(e)
    for w in caught:
        console.print(f"[yellow]note:[/yellow] {w.message}")
    console.print(f"{manifest}: {table.num_rows} rows")
    _print_counts(console, table)
    n_problems = _print_row_warnings(console, table)
    if data_root is not None:
        problems = check_media_paths(table, data_root)
        n_problems += len(problems)
        if problems:
            console.print(f"[red]{len(problems)} media path problem(s)[/red] under {data_root}:")
            for kind, count in sorted(Counter(p.problem for p in problems).items()):
                console.print(f"  {kind}: {count}")
            for p in problems[:EXAMPLES_SHOWN]:
                console.print(f"  row {p.row_index} {p.clip_id} {p.column}: {p.detail}", markup=False)
        else:
            console.print(f"all media paths exist under {data_root}")
    if strict and n_problems:
        console.print(f"[red]--strict: {n_problems} problem(s)[/red]")
        raise typer.Exit(1)


def _fail(error: ManifestError) -> NoReturn:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(1)


def _print_counts(console: Console, table: pa.Table) -> None:
    counts = table.group_by(["task", "dataset", "split"]).aggregate([("clip_id", "count")]).to_pylist()
    summary = Table("task", "dataset", "split", "rows")
    for row in sorted(counts, key=lambda r: (r["task"], r["dataset"] or "", r["split"] or "")):
        summary.add_row(row["task"], row["dataset"] or "-", row["split"] or "-", str(row["clip_id_count"]))
    console.print(summary)


def _print_row_warnings(console: Console, table: pa.Table) -> int:
    found = row_warnings(table)
    if not found:
        console.print("no row warnings")
        return 0
    console.print(f"[yellow]{len(found)} row warning(s)[/yellow] "
                  "(not fatal: extract rejects the rows it cannot use, with a reason):")
    by_problem: dict[str, list] = {}
    for w in found:
        by_problem.setdefault(w.problem, []).append(w)
    for problem, items in by_problem.items():
        examples = ", ".join(f"{w.clip_id} (row {w.row_index})" for w in items[:EXAMPLES_SHOWN])
        console.print(f"  {problem}: {len(items)} - {ROW_PROBLEMS[problem]}; e.g. {examples}", markup=False)
    return len(found)
