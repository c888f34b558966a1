"""`pipeline manifest ...`: build manifests from corpus layouts and check them before a job.

`build` takes from each format's Reader (manifests.readers.FORMATS) which options it accepts, what each one is
called and which are required: an option the format does not take is refused by name, not ignored.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

from manifests.paths import check_media_paths
from manifests.readers import FORMATS, Reader, ReaderOption, build_manifest
from manifests.readers.reader import SET_FLAG
from manifests.schema import write_manifest
from manifests.validate import ROW_PROBLEMS, ManifestError, read_manifest, row_warnings
from pipeline.cli.common import fail, stdout

manifest_app = typer.Typer(
    help="Build manifests from corpus layouts and validate them.",
    no_args_is_help=True,
)

EXAMPLES_SHOWN = 5


def _reader_flags() -> dict[str, list[tuple[str, ReaderOption]]]:
    """Every reader option given by its own flag (not through --set): flag -> (format, option) for each taker."""
    flags: dict[str, list[tuple[str, ReaderOption]]] = {}
    for reader in FORMATS.values():
        for option in reader.options:
            if option.flag != SET_FLAG:
                flags.setdefault(option.flag, []).append((reader.name, option))
    return flags


READER_FLAGS = _reader_flags()  # each one is a `build` option below


def _option_help(flag: str) -> str:
    """A reader option's help: one text when several formats share it, else each format's text after its name."""
    texts: dict[str, list[str]] = {}
    for name, option in READER_FLAGS[flag]:
        texts.setdefault(option.help, []).append(name)
    if len(texts) == 1 and len(READER_FLAGS[flag]) > 1:
        return f"{next(iter(texts))}."
    return "; ".join(f"{'/'.join(names)}: {text}" for text, names in texts.items()) + "."


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected COLUMN=VALUE, got {value!r}", param_hint=option)
        out[key.strip()] = val
    return out


def _reader_arguments(ctx: typer.Context, reader: Reader, set_: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The reader's keyword arguments from the command line, and the `--set` column defaults left after them.

    Refuses a reader option the format does not take, and asks for a required one that is missing.
    """
    by_flag = {flag: ctx.params[param.name] for param in ctx.command.params for flag in param.opts}
    given: dict[str, Any] = {}
    for flag, takers in READER_FLAGS.items():
        value, kind = by_flag[flag], takers[0][1].kind
        if kind == "pairs":
            value = _pairs(value, flag) or None
        elif kind == "path" and value is not None:
            value = Path(value)
        if value is not None:
            given[flag] = value
    taken = {option.flag: option for option in reader.options}
    refused = sorted(flag for flag in given if flag not in taken)
    if refused:
        raise typer.BadParameter(f"{', '.join(refused)} not used by format {reader.name!r}", param_hint="options")
    arguments = {taken[flag].keyword: value for flag, value in given.items()}
    defaults = _pairs(set_, SET_FLAG)
    for option in reader.options:
        if option.flag == SET_FLAG and option.keyword in defaults:
            arguments[option.keyword] = defaults.pop(option.keyword)
    for option in reader.options:
        if option.required and option.keyword not in arguments:
            raise typer.BadParameter(reader.missing_message(option), param_hint=option.flag)
    return arguments, defaults


@manifest_app.command(
    epilog=(
        "Examples:\n\n"
        "pipeline manifest build ljspeech /data/LJSpeech-1.1 --out ljspeech.parquet\n\n"
        "pipeline manifest build vggsound vggsound.csv --video-dir /data/vggsound/video --out vgg.parquet\n\n"
        "pipeline manifest build lrs2 /data/lrs2/train.txt --media-root /data/lrs2/main --out lrs2.parquet\n\n"
        "pipeline manifest build table clips.csv --map clip_id=id --map video_path=file --set task=v2s "
        "--out m.parquet\n\n"
        "pipeline manifest build reference filelists/train.txt --set task=visual_tts --out ref.parquet\n\n"
        "pipeline manifest build lhotse librispeech_cuts_dev-clean.jsonl.gz --dataset librispeech --split valid "
        "--out ls.parquet\n\n"
        "Formats:\n\n" + "\n\n".join(f"{reader.name}: {reader.description}" for reader in FORMATS.values())
    ),
)
def build(
    ctx: typer.Context,
    format: str = typer.Argument(..., help=f"Corpus layout: {', '.join(FORMATS)}."),
    source: Path = typer.Argument(..., help="Corpus folder (ljspeech, libritts, grid) or list/csv/table file."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest Parquet file to write."),
    # The reader options (READER_FLAGS), read by _reader_arguments through ctx.
    data_root: Optional[Path] = typer.Option(None, "--data-root", help=_option_help("--data-root")),
    video_dir: Optional[Path] = typer.Option(None, "--video-dir", help=_option_help("--video-dir")),
    media_root: Optional[Path] = typer.Option(None, "--media-root", help=_option_help("--media-root")),
    video_ext: Optional[str] = typer.Option(None, "--video-ext", help=_option_help("--video-ext")),
    pattern: Optional[str] = typer.Option(None, "--pattern", help=_option_help("--pattern")),
    list_path: Optional[Path] = typer.Option(None, "--list", help=_option_help("--list")),
    align_pattern: Optional[str] = typer.Option(None, "--align-pattern", help=_option_help("--align-pattern")),
    max_seconds: Optional[str] = typer.Option(None, "--max-seconds", help=_option_help("--max-seconds")),
    map_: list[str] = typer.Option([], "--map", help=_option_help("--map")),
    supervisions: Optional[Path] = typer.Option(None, "--supervisions", help=_option_help("--supervisions")),
    set_: list[str] = typer.Option([], "--set", help="column=value filling empty cells (repeatable), e.g. task=v2s."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help=_option_help("--dataset")),
    split: Optional[str] = typer.Option(None, "--split", help=_option_help("--split")),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file."),
) -> None:
    """Build a manifest from a corpus layout; it is validated before it is written."""
    if format not in FORMATS:
        raise typer.BadParameter(f"unknown format {format!r}; known: {', '.join(FORMATS)}", param_hint="FORMAT")
    if out.exists() and not force:
        raise typer.BadParameter(f"{out} exists; pass --force to overwrite it", param_hint="--out")
    arguments, defaults = _reader_arguments(ctx, FORMATS[format], set_)

    console = stdout
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = build_manifest(format, source, defaults=defaults or None, **arguments)
        except ManifestError as e:
            fail(str(e))
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
    console = stdout
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = read_manifest(manifest)
        except ManifestError as e:
            fail(str(e))
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


def _print_counts(console: Console, table: pa.Table) -> None:
    counts = table.group_by(["task", "dataset", "split", "subset"]).aggregate([("clip_id", "count")]).to_pylist()
    summary = Table("task", "dataset", "split", "subset", "rows")
    for row in sorted(counts, key=lambda r: (r["task"], r["dataset"] or "", r["split"] or "", r["subset"] or "")):
        summary.add_row(row["task"], row["dataset"] or "-", row["split"] or "-", row["subset"] or "-",
                        str(row["clip_id_count"]))
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
