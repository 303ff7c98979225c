"""The benchmark harness runs (--quick: tiny shapes; this checks the harness, not the speed)."""
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def test_quick_benchmark_writes_a_results_table(tmp_path):
    out = tmp_path / "RESULTS.md"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--quick", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    assert "| Conv2D forward+backward (4,3,16,16)->8 |" in text
    assert "train step catdog-small" in text and "train step catdog-resnet" in text and "Where the time" in text
    assert "float32 matmul peak" in text
    assert "GEMM floor" in text and text.count(" ms | ") >= 3  # the steps and inference, each beside its floor
