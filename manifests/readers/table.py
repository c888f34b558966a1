"""Any corpus already listed in a table: a CSV/TSV with a header or a JSON Lines file, its columns mapped onto the
manifest's; the one format that takes the clip_id and task from the file itself."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pyarrow as pa

from manifests.readers.common import apply_defaults, check_columns
from manifests.readers.reader import Reader, ReaderOption
from manifests.schema import MANIFEST_SCHEMA
from manifests.validate import ManifestError, conform_table


def read_table(path: str | Path, *, mapping: dict[str, str] | None = None,
               defaults: dict[str, Any] | None = None) -> pa.Table:
    """A CSV (`.csv`, `.tsv`, with a header) or JSON Lines (`.jsonl`, `.ndjson`) file as a manifest table.

    mapping is {manifest_column: source_column}; a manifest column not in mapping is taken from the source column
    of the same name when there is one. defaults are constants filling a column where it is null or absent (e.g.
    {"task": "v2s"}). Other source columns are dropped. CSV values are read as text (so ids like `00042` keep their
    zeros), empty fields as null; media paths are taken as written.
    """
    path = Path(path)
    mapping = dict(mapping or {})
    check_columns(mapping, "mapping")
    source = _read_source(path)
    missing = sorted(set(mapping.values()) - set(source.column_names))
    if missing:
        raise ManifestError(f"{path} has no column(s) {', '.join(missing)} named in the mapping "
                            f"(columns: {', '.join(source.column_names)})")
    names = [name for name in MANIFEST_SCHEMA.names if mapping.get(name, name) in source.column_names]
    if "clip_id" not in names:
        raise ManifestError(f"{path} has no clip_id column (columns: {', '.join(source.column_names)}): "
                            "name the id column with a mapping, e.g. --map clip_id=ID_COLUMN")
    table = pa.Table.from_arrays([source[mapping.get(name, name)] for name in names], names=names)
    for name in defaults or {}:  # absent columns as nulls, so that their defaults fill them
        if name not in table.column_names and name in MANIFEST_SCHEMA.names:
            table = table.append_column(name, pa.nulls(table.num_rows, MANIFEST_SCHEMA.field(name).type))
    return apply_defaults(conform_table(table, source=str(path)), defaults)


def _read_source(path: Path) -> pa.Table:
    """The file as read, every CSV column as text; its suffix says the format."""
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson

    suffix = path.suffix.lower()
    if not path.is_file():
        raise ManifestError(f"{path} does not exist")
    try:
        if suffix in (".csv", ".tsv"):
            delimiter = "\t" if suffix == ".tsv" else ","
            with open(path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f, delimiter=delimiter), None)
            if not header:
                raise ManifestError(f"{path} is empty: a CSV manifest needs a header line")
            return pacsv.read_csv(
                path, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in header},
                                                     strings_can_be_null=True, null_values=[""]))
        if suffix in (".jsonl", ".ndjson"):
            return pajson.read_json(path)
        raise ManifestError(f"{path}: unknown table format {suffix!r}; use .csv, .tsv, .jsonl or .ndjson")
    except (pa.ArrowException, OSError, UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"cannot read {path} ({type(e).__name__}: {e})") from e


READER = Reader(
    name="table", read=read_table,
    description="CSV/TSV with a header or JSON Lines, columns mapped with --map (any task)",
    options=(ReaderOption("mapping", "--map", "manifest_column=source_column (repeatable)", kind="pairs"),),
    takes_defaults=True,
)
