"""Shared by the benchmark scripts: replace one ``## <title>`` section of bench/results.md."""

from __future__ import annotations

import re
from pathlib import Path


def write_section(out: str | Path, title: str, section: str) -> None:
    """Write ``section`` (text starting with ``## <title>``) into ``out``, replacing the section
    of that title (up to the next ``## `` heading) and leaving the rest of the file as it is; a
    missing file starts with the results heading. The section goes at the end."""
    out = Path(out)
    text = out.read_text() if out.exists() else "# pgagent benchmark results\n"
    text = re.sub(r"\n## " + re.escape(title) + r"\n.*?(?=\n## |\Z)", "", text, flags=re.S).rstrip("\n")
    out.write_text(text + "\n\n" + section)
