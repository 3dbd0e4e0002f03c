"""Where a process's time went, from py-spy's collapsed stacks (``py-spy record --format raw``).

Each line of that format is ``frame;frame;...;frame count``, outermost first, a frame being
``function (file:line)``. Two views, each as a share of all samples:

  self       the innermost frame: where the CPU was
  inclusive  every function on the stack, once per sample: what a stage costs with its callees
             (without the frames every request runs under: the process, ``runpy``, the CLI, the
             server's and the event loop's entry points, a thread's bootstrap)

Frames are grouped by function and file (their line numbers dropped), and files are shown from
their last ``site-packages/`` or repository folder, so a stage reads as ``handler/http/app.py``.

    .venv/bin/python bench/stacks.py profile.txt [--top 20]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")
ROOTS = (  # a file is shown from after the last of these it holds
    re.compile(r".*/site-packages/"),
    re.compile(r".*/lib/python3\.\d+/"),
    re.compile(r".*/(?=(handler|devtools|bench)/)"),
)


ENTRY_FILES = {  # the frames every request runs under: no stage of its own
    "<frozen runpy>",
    "handler/commands/cli.py",
    "handler/entry/service.py",
    "uvicorn/main.py",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "asyncio/runners.py",
    "threading.py",
}


def is_entry(name: str) -> bool:
    return name.startswith("process ") or name.rpartition(" (")[2].rstrip(")") in ENTRY_FILES


def frame_name(frame: str) -> str:
    """``function (short/file.py)``: the frame without its line, its file from a known root."""
    found = FRAME.match(frame.strip())
    if found is None:
        return frame.strip()
    file = found["file"]
    for root in ROOTS:
        file, replaced = root.subn("", file, count=1)
        if replaced:
            break
    return f"{found['function']} ({file})"


def tally(lines: list[str]) -> tuple[Counter[str], Counter[str], int]:
    """Self and inclusive sample counts per frame, and the number of samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            if not is_entry(name):
                inclusive[name] += count
    return own, inclusive, total


def summary(lines: list[str], top: int = 20) -> str:
    own, inclusive, total = tally(lines)
    if not total:
        return "no samples"
    out = [f"{total:,} samples"]
    for title, counts in (("self", own), ("inclusive", inclusive)):
        out.append(f"  {title}:")
        out += [
            f"    {100 * count / total:5.1f} %  {name}" for name, count in counts.most_common(top)
        ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    print(summary(args.profile.read_text().splitlines(), args.top))


if __name__ == "__main__":
    main()
