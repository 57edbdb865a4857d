"""Records from the files data arrives in: JSON, JSON Lines, Parquet, Arrow, and folders written by
Hugging Face `datasets` (`save_to_disk`), each as a list of dicts.

Columns stay as stored: an image column of Hugging Face's Image type comes back as {"bytes", "path"}.
Parquet and Arrow need pyarrow, `save_to_disk` folders the `datasets` package (the `data` extra).
"""
from __future__ import annotations

import importlib
from pathlib import Path

from minigpt.common.errors import MissingExtraError
from minigpt.common.paths import resolve_path
from minigpt.datasets.annotations import AnnotationError, load_records

TABLE_SUFFIXES = (".json", ".jsonl", ".parquet", ".arrow")


def _module(name: str, needed_by: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise MissingExtraError(needed_by, name.split(".")[0], "data") from None


def _arrow_table(path: Path):
    """An Arrow file in the IPC stream layout (what `datasets` writes) or the file layout."""
    ipc = _module("pyarrow.ipc", f"{path}:")
    try:
        with ipc.open_stream(path) as reader:
            return reader.read_all()
    except Exception:  # noqa: BLE001 - not a stream: try the random-access file layout
        with ipc.open_file(path) as reader:
            return reader.read_all()


def read_table(path: str | Path, columns: list[str] = ()) -> list[dict]:
    """The records of `path`; each of `columns` must exist (AnnotationError naming the file and the column)."""
    path = resolve_path(str(path))
    if path.is_dir():
        datasets = _module("datasets", f"{path}: a saved datasets folder")
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            raise AnnotationError(path, None, f"holds the splits {sorted(loaded)}; name one folder, e.g. {path}/"
                                              f"{sorted(loaded)[0]}")
        table = loaded.data.table
    elif path.suffix == ".parquet":
        table = _module("pyarrow.parquet", f"{path}:").read_table(path)
    elif path.suffix == ".arrow":
        table = _arrow_table(path)
    elif path.suffix in (".json", ".jsonl"):
        records = load_records(path)
        for index, record in enumerate(records):
            missing = [column for column in columns if not isinstance(record, dict) or column not in record]
            if missing:
                raise AnnotationError(path, index, f"missing column '{missing[0]}'")
        return records
    else:
        raise AnnotationError(path, None, f"not a data file we read ({', '.join(TABLE_SUFFIXES)}, or a folder "
                                          "written by datasets' save_to_disk)")
    missing = [column for column in columns if column not in table.column_names]
    if missing:
        raise AnnotationError(path, None, f"missing column '{missing[0]}' (it has {', '.join(table.column_names)})")
    return table.to_pylist()
