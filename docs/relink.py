"""Re-point the code links of docs/backprop.md after the code moved: each link's text is a
line of code, and its #L anchor becomes the first line of the target file that holds it.

    python docs/relink.py

tests/test_docs.py fails while a link points at a line that no longer holds its code.
"""
import os
import re

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backprop.md")
doc = open(path).read()


def fix(m):
    snippet, target, line = m.group(1), m.group(2), m.group(3)
    file = os.path.normpath(os.path.join(os.path.dirname(path), target))
    lines = open(file).read().splitlines()
    hits = [i + 1 for i, l in enumerate(lines) if snippet in l]
    if not hits:
        print(f"not found in {target}: {snippet}")
        return m.group(0)
    return f"[`{snippet}`]({target}#L{hits[0]})"


doc = re.sub(r"\[`([^`]+)`\]\(([^)#]+)#L(\d+)\)", fix, doc)
open(path, "w").write(doc)
