"""Print the mutation score of a finished ``mutmut run`` per module, per scope and overall, and the survivors.

Run in the folder mutmut ran in (it reads ``mutants/**/*.py.meta``, mutmut's record of each mutant's test exit
code, with mutmut's own mapping from exit code to status). Score = killed / (mutants − skipped − not pure): a mutant no
test reaches ("no tests") counts as not killed, a timeout as killed (the tests noticed; the killed column
includes the timeouts, which are also counted on their own).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

KILLED = ("killed", "timeout", "caught by type check", "segfault")
# The hook's parts that are not pure (they read a model's config from disk, or OpenRLHF's own arguments, and the
# unit tests build the hook around them): mutated, but reported apart and left out of the score.
NOT_PURE = ("integration.hook.x_hidden_size_of_", "integration.hook.xǁAggregatorHookǁ__init__")
SCOPES = {"method/": "openrlhf_maestro/method/", "integration/hook.py": "openrlhf_maestro/integration/hook.py"}


def main(root: Path) -> int:
    metas = sorted((root / "mutants").rglob("*.py.meta"))
    if not metas:
        print(f"no mutmut results under {root / 'mutants'}: run `mutmut run` there first", file=sys.stderr)
        return 2
    per_module: dict[str, Counter] = {}
    survivors: list[tuple[str, str]] = []
    for meta in metas:
        module = str(meta.relative_to(root / "mutants")).removesuffix(".meta")
        counts = Counter()
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            status = "skipped" if any(part in name for part in NOT_PURE) else status_by_exit_code[code]
            counts[status] += 1
            if status not in KILLED and status != "skipped":
                survivors.append((name, status))
        if counts:
            per_module[module] = counts
    rows = [(module, counts) for module, counts in per_module.items()]
    rows += [
        (f"{label} (all)", sum((c for m, c in per_module.items() if m.startswith(p)), Counter()))
        for label, p in SCOPES.items()
        if not label.endswith(".py")
    ]
    rows.append(("total", sum(per_module.values(), Counter())))
    headers = ("mutants", "killed", "timeout", "survived", "no tests", "score")
    print(f"{'module':<46}" + "".join(f"{h:>9}" for h in headers))
    for module, c in rows:
        total = sum(c.values()) - c["skipped"]
        killed = sum(c[s] for s in KILLED)
        score = f"{100 * killed / total:.1f}%" if total else "-"
        cells = (total, killed, c["timeout"], c["survived"], c["no tests"], score)
        print(f"{module:<46}" + "".join(f"{v:>9}" for v in cells))
    print(f"\n{len(survivors)} not killed (`mutmut show NAME` in {root} prints the change):")
    for name, status in survivors:
        print(f"  {status:<10} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
