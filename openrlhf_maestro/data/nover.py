"""Convert NOVER-format data into OpenRLHF prompt JSONL, one file per split.

    python -m openrlhf_maestro.data.nover IN OUT_DIR [--input-key input] [--label-key label] [--splits ...]

IN is a `.csv` or `.jsonl` file, or a directory whose `.csv`/`.jsonl` files are all converted (other files
are skipped and listed). Each row needs the columns `prompt`, `reference` and `split` (NOVER's published
`dataset/*.csv`; CSV fields may span lines inside quotes); other columns are ignored. Row r of split s goes to
`OUT_DIR/<s>.jsonl` as

    {"input": prompt, "label": reference, "source": stem, "datasource": stem}

with `stem` the input file's name without suffix (`nr` for nr.csv). OpenRLHF reads `input` and `label` with
`--data.input_key input --data.label_key label`, and `datasource` to report eval metrics per benchmark
(`eval_<datasource>_pass1`). Prompts and references are written verbatim (no stripping).

Nothing is dropped silently: a malformed row (missing column, empty prompt or reference, unknown or empty
split, a non-string value, bytes that are not UTF-8, broken CSV quoting or JSON) raises `NoverFormatError`
naming the file, the 1-based data row and, for CSV, the line(s). Output is written to temporary files and
renamed only when every input converted, so an error leaves OUT_DIR as it was.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "validation", "test")
"""Split names accepted by default (NOVER's files use `train` and `test`)."""
SUFFIXES = (".csv", ".jsonl")
REQUIRED = ("prompt", "reference", "split")


class NoverFormatError(ValueError):
    """A malformed input file or row; the message names the file, the data row and (CSV) the lines."""


@dataclass(frozen=True)
class Row:
    """One validated data row."""

    prompt: str
    reference: str
    split: str
    source: str


def _where(path: Path, row: int | None, lines: tuple[int, int] | None) -> str:
    at = str(path)
    if row is not None:
        at += f": data row {row}"
    if lines is not None:
        at += f" (line {lines[0]})" if lines[0] == lines[1] else f" (lines {lines[0]}-{lines[1]})"
    return at


class _BadBytes(Exception):
    """A line that is not UTF-8; the reader turns it into a NoverFormatError naming the data row."""

    def __init__(self, line: int, exc: UnicodeDecodeError) -> None:
        super().__init__(f"line {line} is not valid UTF-8 ({exc.reason} at byte {exc.start} of the line)")
        self.line = line


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) per physical line; decoding line by line lets an error name its line.

    Splitting bytes at b"\n" is safe: no UTF-8 multi-byte sequence contains that byte.
    """
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                # utf-8-sig on the first line drops a byte-order mark (Excel writes one).
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise _BadBytes(number, exc) from exc
            yield number, text


def _validate(
    path: Path, record: dict, row: int, lines: tuple[int, int] | None, splits: Sequence[str], columns: Sequence[str]
) -> Row:
    where = _where(path, row, lines)
    missing = [c for c in columns if c not in record]
    if missing:
        raise NoverFormatError(f"{where}: missing column(s) {missing}; present: {sorted(record)}")
    prompt_col, reference_col, split_col = columns
    for col in columns:
        if not isinstance(record[col], str):
            raise NoverFormatError(f"{where}: column {col!r} must be a string, got {record[col]!r}")
    for col in (prompt_col, reference_col):
        if not record[col].strip():
            raise NoverFormatError(f"{where}: column {col!r} is empty")
    split = record[split_col]
    if split not in splits:
        raise NoverFormatError(f"{where}: unknown split {split!r}; expected one of {list(splits)} (see --splits)")
    return Row(record[prompt_col], record[reference_col], split, path.stem)


def _read_csv(path: Path, splits: Sequence[str], columns: Sequence[str]) -> Iterator[Row]:
    lines = _decoded_lines(path)
    numbers = [0]  # the number of the last physical line handed to the csv reader

    def feed() -> Iterator[str]:
        for number, text in lines:
            numbers[0] = number
            yield text

    # NOVER prompts run to a few thousand characters; raise the 128 KiB default field cap for long books.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    reader = csv.reader(feed(), strict=True)
    row = 0
    try:
        header = next(reader, None)
        if header is None:
            raise NoverFormatError(f"{path}: empty file (expected a header with {list(columns)})")
        if len(set(header)) != len(header):
            raise NoverFormatError(f"{path}: line 1: duplicate column names in header {header}")
        missing = [c for c in columns if c not in header]
        if missing:
            raise NoverFormatError(f"{path}: line 1: header {header} lacks column(s) {missing}")
        row, first = 0, numbers[0] + 1
        for fields in reader:
            span = (first, numbers[0])
            first = numbers[0] + 1
            if not fields:  # a blank line is not a data row (csv.DictReader skips it too)
                continue
            row += 1
            if len(fields) != len(header):
                raise NoverFormatError(
                    f"{_where(path, row, span)}: {len(fields)} fields, the header has {len(header)} ({header})"
                )
            yield _validate(path, dict(zip(header, fields, strict=True)), row, span, splits, columns)
    except csv.Error as exc:
        raise NoverFormatError(f"{path}: data row {row + 1} (near line {numbers[0]}): malformed CSV: {exc}") from exc
    except _BadBytes as exc:
        what = "the header" if numbers[0] <= 1 and row == 0 else f"data row {row + 1}"
        raise NoverFormatError(f"{path}: {what}: {exc}") from exc


def _read_jsonl(path: Path, splits: Sequence[str], columns: Sequence[str]) -> Iterator[Row]:
    row = 0
    lines = _decoded_lines(path)
    while True:
        try:
            number, text = next(lines)
        except StopIteration:
            return
        except _BadBytes as exc:
            raise NoverFormatError(f"{path}: data row {row + 1}: {exc}") from exc
        if not text.strip():
            continue
        row += 1
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NoverFormatError(f"{_where(path, row, (number, number))}: invalid JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise NoverFormatError(
                f"{_where(path, row, (number, number))}: expected a JSON object, got {type(record).__name__}"
            )
        yield _validate(path, record, row, (number, number), splits, columns)


def input_files(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """The files to convert and the directory entries skipped (not .csv/.jsonl), both sorted.

    Raises:
        NoverFormatError: a path is missing, a named file has another suffix, a directory holds no input file,
            or two inputs share a stem (their rows would be merged under one `source`).
    """
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files, skipped = [], []
    for p in map(Path, paths):
        if p.is_dir():
            entries = sorted(e for e in p.iterdir() if e.is_file())
            found = [e for e in entries if e.suffix in SUFFIXES]
            if not found:
                raise NoverFormatError(f"{p}: directory holds no {'/'.join(SUFFIXES)} file")
            files += found
            skipped += [e for e in entries if e.suffix not in SUFFIXES]
        elif p.is_file():
            if p.suffix not in SUFFIXES:
                raise NoverFormatError(f"{p}: unsupported file type {p.suffix!r}; expected {' or '.join(SUFFIXES)}")
            files.append(p)
        else:
            raise NoverFormatError(f"{p}: no such file or directory")
    stems = Counter(f.stem for f in files)
    clash = sorted(str(f) for f in files if stems[f.stem] > 1)
    if clash:
        raise NoverFormatError(f"inputs share a stem (their `source` would be ambiguous): {clash}")
    return files, skipped


def read_rows(
    path: str | os.PathLike, *, splits: Sequence[str] = SPLITS, columns: Sequence[str] = REQUIRED
) -> Iterator[Row]:
    """Validated rows of one NOVER `.csv` or `.jsonl` file, in file order.

    Args:
        path: the file; its stem becomes each row's `source`.
        splits: accepted split values.
        columns: the (prompt, reference, split) column names.
    """
    path = Path(path)
    reader = {".csv": _read_csv, ".jsonl": _read_jsonl}.get(path.suffix)
    if reader is None:
        raise NoverFormatError(f"{path}: unsupported file type {path.suffix!r}; expected {' or '.join(SUFFIXES)}")
    return reader(path, tuple(splits), tuple(columns))


def _split_order(splits: Sequence[str]) -> Callable[[str], tuple[int, str]]:
    """Sort key: the order of `splits`, then by name."""
    order = {s: i for i, s in enumerate(splits)}
    return lambda s: (order.get(s, len(order)), s)


def convert_by_source(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    input_key: str = "input",
    label_key: str = "label",
    splits: Sequence[str] = SPLITS,
    columns: Sequence[str] = REQUIRED,
) -> dict[str, dict[str, int]]:
    """Convert `inputs` into `out_dir/<split>.jsonl`; returns {split: {source: rows}}.

    Args:
        inputs: a file, a directory, or several of either (see the module docstring).
        out_dir: created if missing; the `<split>.jsonl` of each split found is replaced, other files are kept.
        input_key: output key of the prompt (OpenRLHF's `--data.input_key`).
        label_key: output key of the reference (OpenRLHF's `--data.label_key`).
        splits: accepted split values; a row with another one is an error.
        columns: the (prompt, reference, split) column names of the inputs.
    """
    if len({input_key, label_key, "source", "datasource"}) != 4:
        raise ValueError(
            f"input_key and label_key must differ from each other and from source/datasource, got "
            f"{input_key!r}, {label_key!r}"
        )
    if len(tuple(columns)) != 3:
        raise ValueError(f"columns must name (prompt, reference, split), got {columns!r}")
    files, _ = input_files(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Counter] = {}
    handles = {}
    try:
        for path in files:
            for row in read_rows(path, splits=splits, columns=columns):
                if row.split not in handles:
                    handles[row.split] = (out / f".{row.split}.jsonl.tmp").open("w", encoding="utf-8")
                    counts[row.split] = Counter()
                record = {
                    input_key: row.prompt,
                    label_key: row.reference,
                    "source": row.source,
                    "datasource": row.source,
                }
                handles[row.split].write(json.dumps(record, ensure_ascii=False) + "\n")
                counts[row.split][row.source] += 1
    except BaseException:
        for split, fh in handles.items():
            fh.close()
            (out / f".{split}.jsonl.tmp").unlink(missing_ok=True)
        raise
    for split, fh in handles.items():
        fh.close()
        os.replace(out / f".{split}.jsonl.tmp", out / f"{split}.jsonl")
    return {split: dict(counts[split]) for split in sorted(counts, key=_split_order(splits))}


def convert(
    inputs: str | os.PathLike | Iterable[str | os.PathLike], out_dir: str | os.PathLike, **kwargs
) -> dict[str, int]:
    """Convert `inputs` into `out_dir/<split>.jsonl`; returns {split: rows written}. Options as `convert_by_source`."""
    return {
        split: sum(by_source.values()) for split, by_source in convert_by_source(inputs, out_dir, **kwargs).items()
    }


def format_table(counts: dict[str, dict[str, int]]) -> str:
    """A plain-text table: one line per source, one column per split, with totals."""
    splits = list(counts)
    sources = sorted({s for by_source in counts.values() for s in by_source})
    rows = [["source", *splits, "total"]]
    for src in sources:
        cells = [counts[sp].get(src, 0) for sp in splits]
        rows.append([src, *map(str, cells), str(sum(cells))])
    totals = [sum(counts[sp].values()) for sp in splits]
    rows.append(["total", *map(str, totals), str(sum(totals))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def fmt(cells: list[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded)

    return "\n".join(fmt(r) for r in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m openrlhf_maestro.data.nover",
        description="Convert NOVER CSV/JSONL (prompt, reference, split) into OpenRLHF prompt JSONL per split.",
    )
    parser.add_argument("inputs", nargs="+", metavar="IN", help="a .csv/.jsonl file or a directory of them")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="output directory (created if missing)")
    parser.add_argument(
        "--input-key",
        "--prompt-key",
        dest="input_key",
        default="input",
        help="output key of the prompt, OpenRLHF's --data.input_key (default: input)",
    )
    parser.add_argument(
        "--label-key",
        default="label",
        help="output key of the reference, OpenRLHF's --data.label_key (default: label)",
    )
    parser.add_argument(
        "--splits",
        default=",".join(SPLITS),
        help=f"comma-separated accepted split values; others are an error (default: {','.join(SPLITS)})",
    )
    parser.add_argument("--prompt-column", default="prompt", help="input column of the prompt (default: prompt)")
    parser.add_argument(
        "--reference-column", default="reference", help="input column of the reference (default: reference)"
    )
    parser.add_argument("--split-column", default="split", help="input column of the split (default: split)")
    args = parser.parse_args(argv)
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    if not splits:
        parser.error(f"--splits names no split: {args.splits!r}")
    try:
        files, skipped = input_files(args.inputs)
        counts = convert_by_source(
            files,
            args.out_dir,
            input_key=args.input_key,
            label_key=args.label_key,
            splits=splits,
            columns=(args.prompt_column, args.reference_column, args.split_column),
        )
    except (NoverFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in skipped:
        print(f"skipped (not {'/'.join(SUFFIXES)}): {path}")
    print(f"read {len(files)} file(s); wrote " + ", ".join(f"{Path(args.out_dir) / s}.jsonl" for s in counts))
    print(format_table(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
