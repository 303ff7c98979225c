"""The Python in the README runs as printed."""
import os
import re

import numpy as np

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", open(README, encoding="utf-8").read(), re.S)
    assert len(blocks) >= 2 and len(blocks[0].strip().splitlines()) <= 15
    namespace = {}
    for block in blocks:
        exec(compile(block, README, "exec"), namespace)
    assert namespace["loss"] < np.log(10)  # it learned something: below the chance-level loss
    assert namespace["result"].ok
    assert namespace["first_conv_output"].shape == (64, 16, 32, 32)
