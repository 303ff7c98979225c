"""The derivations in docs/backprop.md point at the code that implements them; keep the links honest."""
import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..")
LINK = re.compile(r"\[`([^`]+)`\]\(([^)#]+)#L(\d+)\)")


def test_every_code_link_points_at_its_code():
    doc_path = os.path.join(ROOT, "docs", "backprop.md")
    links = LINK.findall(open(doc_path, encoding="utf-8").read())
    assert len(links) >= 20
    for snippet, target, line in links:
        lines = open(os.path.normpath(os.path.join(ROOT, "docs", target)), encoding="utf-8").read().splitlines()
        assert snippet in lines[int(line) - 1], f"{target}#L{line} no longer holds `{snippet}`"
