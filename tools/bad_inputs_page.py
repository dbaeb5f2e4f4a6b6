#!/usr/bin/env python3
"""Render docs/bad-inputs.md from the bad inputs the tests replay (tests/e2e/bad_inputs.py).

    python tools/bad_inputs_page.py > docs/bad-inputs.md

tests/e2e/test_bad_inputs.py runs every input and checks its message, and fails while the page is
not this script's output.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from bad_inputs import BAD_INPUTS, GROUPS, BadInput

INTRO = """\
# What a user is told: bad inputs replayed

[← back to the README](../README.md)

Each line is one mistake a new user makes, replayed in a fresh project by a real `pytest` or
`pytest-convergence` command, and the first line of the message it gets (the error, not pytest's
chrome). The mistakes, commands and messages are the data of
[`tests/e2e/bad_inputs.py`](../tests/e2e/bad_inputs.py); `tests/e2e/test_bad_inputs.py` runs every
one and checks its message, its exit code, and that what the user sees holds no raw Python
traceback and no frames or exception class from inside TensorFlow or Keras. This page is rendered
from that data:

```
python tools/bad_inputs_page.py > docs/bad-inputs.md
```
"""


def cell(bad: BadInput) -> str:
    message = bad.line
    if bad.kept:
        snapshots = [name for name in bad.files if name.endswith(".convergence.txt")]
        kept = [name for name in snapshots if name in bad.kept]
        others = [f"{name} kept" for name in bad.kept if name not in snapshots]
        files = [f"{len(kept)} of {len(snapshots)} snapshots unchanged", *others]
        message += f" [files: {'; '.join(files)}]"
    message = message.replace("|", "\\|")
    return message if "`" in message else f"`{message}`"


def page() -> str:
    out = [INTRO, f"{len(BAD_INPUTS)} bad inputs.", ""]
    for group, explanation in GROUPS.items():
        out += [f"## {group}", "", explanation, "", "| input | mistake | first line of the message |"]
        out.append("| --- | --- | --- |")
        for bad in (bad for bad in BAD_INPUTS if bad.group == group):
            mistake = bad.mistake.replace("|", "/")
            out.append(f"| `{bad.name}` | {mistake} | {cell(bad)} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(page())
