"""The code blocks of a docs page that are named by a line "`NAME`:" (optionally with text after it) just before
them, so tests can check the configuration files a page shows against the real tools."""
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def named_blocks(page: str) -> dict[str, str]:
    lines = (DOCS / page).read_text().splitlines()
    out, i = {}, 0
    while i < len(lines):
        m = re.match(r"^`([\w.\-/]+)`", lines[i])
        if m and i + 2 < len(lines) and lines[i + 2].startswith("```"):
            j = i + 3
            while not lines[j].startswith("```"):
                j += 1
            out[m.group(1)] = "\n".join(lines[i + 3:j]) + "\n"
            i = j
        i += 1
    return out
