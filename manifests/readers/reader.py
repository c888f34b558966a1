"""What a reader module declares about itself: its format name, its function, a one-line description and the
options it takes from `pipeline manifest build`. The CLI refuses an option the format does not list and asks for
the ones it marks required, so a reader option is added in the reader's module alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import pyarrow as pa

from manifests.schema import Clip

SET_FLAG = "--set"  # an option with this flag is a `--set KEYWORD=VALUE` pair, taken out of the column defaults


@dataclass(frozen=True)
class ReaderOption:
    """One keyword argument of a reader and the command-line option that gives it."""

    keyword: str        # the reader function's keyword argument
    flag: str           # the `pipeline manifest build` option, e.g. "--video-dir" (or SET_FLAG)
    help: str           # one line, without the format's name and the final period
    kind: Literal["path", "str", "pairs"] = "str"  # pairs: repeatable COLUMN=VALUE, given to the reader as a dict
    required: bool = False
    missing: str = ""   # what to say when a required option is absent; default "FORMAT needs FLAG"


@dataclass(frozen=True)
class Corpus:
    """What a public corpus says about itself: its licence as its release states it, the Hugging Face licence id
    closest to it (`other` when none fits), and where it is published. Dataset cards quote it."""

    licence: str
    hf_licence: str
    homepage: str


@dataclass(frozen=True)
class Reader:
    """A corpus layout `pipeline manifest build FORMAT` understands."""

    name: str
    read: Callable[..., list[Clip] | pa.Table]  # read(source, **options) -> clips, or a table
    description: str
    options: tuple[ReaderOption, ...]
    takes_defaults: bool = False  # read(source, defaults=...) fills the `--set` columns itself
    corpus: Corpus | None = None  # the public corpus of this layout (None: a generic layout, any corpus)

    def missing_message(self, option: ReaderOption) -> str:
        return option.missing or f"{self.name} needs {option.flag}"


# Options most readers share (one object each, so the CLI shows one help text for them).
DATASET = ReaderOption("dataset", "--dataset",
                       "Corpus name for the dataset column (default: the corpus, e.g. lrs2; none for reference)")
SPLIT = ReaderOption("split", "--split",
                     "Canonical split (train, valid, test) for every clip; the corpus's own names go in subset; "
                     "vggsound: keep only rows of this split; lrs2, libritts: default from the list or folder name")
DATA_ROOT = ReaderOption("data_root", "--data-root",
                         "Write media paths relative to this folder (default: the corpus folder, video dir or media "
                         "root)", kind="path")
