"""NOVER -> OpenRLHF prompt JSONL: every sample row lands, loads as OpenRLHF loads it, and bad rows are named."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from openrlhf_maestro.data.nover import NoverFormatError, convert, convert_by_source, format_table, main

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO.parent / "shared" / "data" / "nover-sample"
needs_sample = pytest.mark.skipif(
    not any(SAMPLE.glob("*.csv")), reason=f"NOVER sample data not found at {SAMPLE} (the shared data folder)"
)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- the whole NOVER sample


@needs_sample
def test_every_sample_row_lands(tmp_path: Path) -> None:
    # The expectation, read independently with csv.DictReader: per split, the (source, prompt, reference) rows.
    expected: dict[str, list[tuple[str, str, str]]] = {}
    for path in sorted(SAMPLE.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                expected.setdefault(rec["split"], []).append((path.stem, rec["prompt"], rec["reference"]))

    counts = convert(SAMPLE, tmp_path)

    assert counts == {split: len(rows) for split, rows in expected.items()}
    assert sum(counts.values()) == 6 * 48
    for split, rows in expected.items():
        got = read_jsonl(tmp_path / f"{split}.jsonl")
        assert [(r["source"], r["input"], r["label"]) for r in got] == rows
        assert all(set(r) == {"input", "label", "source", "datasource"} for r in got)
        assert all(r["datasource"] == r["source"] for r in got)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{s}.jsonl" for s in expected)  # no temp files


@needs_sample
def test_output_loads_with_datasets_as_openrlhf_does(tmp_path: Path) -> None:
    """openrlhf/datasets/utils.py: load_dataset("json", data_files=path), then its "train" split."""
    datasets = pytest.importorskip("datasets")
    counts = convert(SAMPLE, tmp_path / "out")
    for split, n in counts.items():
        data = datasets.load_dataset(
            "json", data_files=str(tmp_path / "out" / f"{split}.jsonl"), cache_dir=str(tmp_path / "hf")
        )["train"]
        assert data.num_rows == n
        assert set(data.column_names) == {"input", "label", "source", "datasource"}
        assert all(isinstance(x, str) and x.strip() for x in [*data["input"], *data["label"]])
        assert "\n" in data[0]["input"]  # multi-line prompts survive


@needs_sample
def test_cli_prints_the_count_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "openrlhf_maestro.data.nover",
            str(SAMPLE / "nr.csv"),
            str(tmp_path),
            "--prompt-key",
            "q",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    lines = proc.stdout.splitlines()
    assert lines[-3].split() == ["source", "train", "test", "total"]
    assert lines[-2].split() == ["nr", "32", "16", "48"]
    assert lines[-1].split() == ["total", "32", "16", "48"]
    assert set(read_jsonl(tmp_path / "train.jsonl")[0]) == {"q", "label", "source", "datasource"}


# ---------------------------------------------------------------- several inputs, formats, encodings


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_directory_of_csv_and_jsonl_is_merged_per_split(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in"
    src.mkdir()
    write(src / "a.csv", 'prompt,reference,split,extra\n"multi\nline",r1,train,x\np2,r2,test,y\n')
    write(src / "b.jsonl", '{"prompt": "p3", "reference": "r3", "split": "train"}\n\n')
    write(src / "notes.md", "skipped")
    assert main([str(src), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "skipped (not .csv/.jsonl)" in out and "notes.md" in out
    train = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert [(r["input"], r["label"], r["source"]) for r in train] == [("multi\nline", "r1", "a"), ("p3", "r3", "b")]
    assert convert_by_source(src, tmp_path / "out2") == {"train": {"a": 1, "b": 1}, "test": {"a": 1}}


def test_bom_crlf_and_unicode(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", '\ufeffprompt,reference,split\r\n"é\r\nà",« ok »,train\r\n'.encode())
    assert convert(path, tmp_path / "out") == {"train": 1}
    (rec,) = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert rec["input"] == "é\r\nà" and rec["label"] == "« ok »"


def test_custom_keys_and_splits(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", "question,answer,part\nq,a,dev\n")
    counts = convert(path, tmp_path, input_key="prompt", columns=("question", "answer", "part"), splits=("dev",))
    assert counts == {"dev": 1}
    assert read_jsonl(tmp_path / "dev.jsonl") == [{"prompt": "q", "label": "a", "source": "x", "datasource": "x"}]


# ---------------------------------------------------------------- malformed rows are named


@pytest.mark.parametrize(
    "text, match",
    [
        ("prompt,split\np,train\n", r"x\.csv: line 1: header \['prompt', 'split'\] lacks column\(s\) \['reference'\]"),
        ("", r"x\.csv: empty file"),
        ("prompt,reference,split\np,r,train\n,r,train\n", r"x\.csv: data row 2 \(line 3\): column 'prompt' is empty"),
        ('prompt,reference,split\np,"  \n ",train\n', r"data row 1 \(lines 2-3\): column 'reference' is empty"),
        ("prompt,reference,split\np,r,dev\n", r"data row 1 \(line 2\): unknown split 'dev'; expected one of"),
        ("prompt,reference,split\np,r,\n", r"data row 1 \(line 2\): unknown split ''"),
        ("prompt,reference,split\np,r,train,extra\n", r"data row 1 \(line 2\): 4 fields, the header has 3"),
        ("prompt,reference,split\np,r\n", r"data row 1 \(line 2\): 2 fields"),
        (
            'prompt,reference,split\n"a\nb\nc",r,train\n"d\ne",r,tset\n',
            r"data row 2 \(lines 5-6\): unknown split 'tset'",
        ),
        ('prompt,reference,split\np,r,train\n"never closed,r,train\n', r"data row 2 \(near line 3\): malformed CSV"),
        (b'prompt,reference,split\np,r,train\n"multi\nline \xff",r,train\n', r"data row 2: line 4 is not valid UTF-8"),
        (b"prompt,ref\xe9rence,split\n", r"x\.csv: the header: line 1 is not valid UTF-8"),
        ("prompt,prompt,reference,split\n", r"line 1: duplicate column names"),
    ],
)
def test_malformed_csv(tmp_path: Path, text: str | bytes, match: str) -> None:
    path = write(tmp_path / "x.csv", text)
    with pytest.raises(NoverFormatError, match=match):
        convert(path, tmp_path / "out")


@pytest.mark.parametrize(
    "text, match",
    [
        (
            '{"prompt": "p", "reference": "r", "split": "train"}\n{"prompt": "p"',
            r"y\.jsonl: data row 2 \(line 2\): invalid JSON",
        ),
        (
            '{"prompt": "p", "reference": "r", "split": "train"}\n\n["p", "r"]\n',
            r"data row 2 \(line 3\): expected a JSON object",
        ),
        ('{"prompt": "p", "split": "train"}\n', r"data row 1 \(line 1\): missing column\(s\) \['reference'\]"),
        (
            '{"prompt": "p", "reference": 4, "split": "train"}\n',
            r"data row 1 \(line 1\): column 'reference' must be a string, got 4",
        ),
        ('{"prompt": null, "reference": "r", "split": "train"}\n', r"column 'prompt' must be a string, got None"),
        ('{"prompt": " ", "reference": "r", "split": "train"}\n', r"column 'prompt' is empty"),
        ('{"prompt": "p", "reference": "r", "split": "Train"}\n', r"unknown split 'Train'"),
        (
            b'{"prompt": "p", "reference": "r", "split": "train"}\n{"prompt": "\xc3"}\n',
            r"data row 2: line 2 is not valid UTF-8",
        ),
    ],
)
def test_malformed_jsonl(tmp_path: Path, text: str | bytes, match: str) -> None:
    path = write(tmp_path / "y.jsonl", text)
    with pytest.raises(NoverFormatError, match=match):
        convert(path, tmp_path / "out")


def test_an_error_leaves_the_output_directory_as_it_was(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    write(src / "a.csv", "prompt,reference,split\np,r,train\np,r,test\n")
    write(src / "b.csv", "prompt,reference,split\np,r,train\np,,train\n")
    out = tmp_path / "out"
    out.mkdir()
    write(out / "train.jsonl", "old\n")
    with pytest.raises(NoverFormatError, match=r"b\.csv: data row 2 \(line 3\): column 'reference' is empty"):
        convert(src, out)
    assert sorted(p.name for p in out.iterdir()) == ["train.jsonl"]
    assert (out / "train.jsonl").read_text() == "old\n"


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda d: [write(d / "a.csv", ""), write(d / "a.jsonl", "")], r"inputs share a stem"),
        (lambda d: [write(d / "a.tsv", "")], r"directory holds no \.csv/\.jsonl file"),
        (lambda d: None, r"directory holds no"),
    ],
)
def test_bad_inputs(tmp_path: Path, setup, match: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    setup(src)
    with pytest.raises(NoverFormatError, match=match):
        convert(src, tmp_path / "out")


def test_bad_paths_and_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(NoverFormatError, match="no such file or directory"):
        convert(tmp_path / "missing.csv", tmp_path / "out")
    with pytest.raises(NoverFormatError, match=r"unsupported file type '\.tsv'"):
        convert(write(tmp_path / "x.tsv", "a\tb\n"), tmp_path / "out")
    bad = write(tmp_path / "bad.csv", "prompt,reference,split\np,r,valid\n")
    assert main([str(bad), str(tmp_path / "out")]) == 1
    assert "bad.csv: data row 1 (line 2): unknown split 'valid'" in capsys.readouterr().err
    assert main([str(bad), str(tmp_path / "out"), "--splits", "train,valid"]) == 0
    with pytest.raises(ValueError, match="input_key and label_key must differ"):
        convert(bad, tmp_path / "out", input_key="label")


def test_format_table() -> None:
    table = format_table({"train": {"a": 2, "bb": 1}, "test": {"a": 1}})
    assert [line.split() for line in table.splitlines()] == [
        ["source", "train", "test", "total"],
        ["a", "2", "1", "3"],
        ["bb", "1", "0", "1"],
        ["total", "3", "1", "4"],
    ]
    assert Counter(len(line) for line in table.splitlines()).most_common(1)[0][1] == 4  # aligned columns
