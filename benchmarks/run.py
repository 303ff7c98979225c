"""Benchmark minicnn against PyTorch on the same machine, in one process and one run.

    python benchmarks/run.py                 # CPU (NumPy vs PyTorch CPU); writes benchmarks/RESULTS.md + ratios.png
    python benchmarks/run.py --backend cupy  # GPU (CuPy vs PyTorch CUDA); writes benchmarks/RESULTS-gpu.md
    python benchmarks/run.py --quick         # tiny shapes, a check of the harness, not of speed

Every time is the median of repeated runs after a warm-up. Each figure is
printed beside PyTorch's, measured moments apart, as the ratio
minicnn / PyTorch (below 1: minicnn is faster). Peak memory is measured in
a fresh subprocess per library, as the growth of the process's peak resident
memory over one training step. Run it on an otherwise idle machine.
"""
import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

# What minicnn sets while it loads NumPy, when imported first (see minicnn/threads.py): OpenBLAS's idle
# threads sleep at once instead of busy-waiting on the cores minicnn's threads use.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import minicnn  # noqa: E402
from minicnn import SGD  # noqa: E402
from minicnn.architectures import build, catdog_resnet, catdog_small  # noqa: E402
from minicnn.layers import Conv2D, Dense  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

CONV_CASES = [((64, 3, 64, 64), 32), ((64, 32, 32, 32), 64), ((64, 64, 16, 16), 128), ((256, 1, 28, 28), 32)]
POOL_SHAPE = (64, 32, 64, 64)
QUICK_CONV_CASES = [((4, 3, 16, 16), 8)]
QUICK_POOL_SHAPE = (4, 8, 16, 16)


def median_time(fn, sync, repeats, warmup=2):
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- minicnn ------------------------------------------------------------------
class Ours:
    def __init__(self, backend):
        self.backend = minicnn.use_backend(backend)
        self.sync = self.backend.synchronize

    def data(self, shape, seed=0):
        return self.backend.asarray(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))

    def conv(self, shape, filters, backward):
        layer = minicnn.Conv2D(shape[1], filters, 3, padding=1)
        x = self.data(shape)
        dout = self.data((shape[0], filters, shape[2], shape[3]), seed=1)
        if not backward:
            return lambda: layer.forward(x)
        return lambda: (layer.forward(x), layer.backward(dout))

    def pool(self, kind, shape):
        layer = {"max": minicnn.MaxPool2D, "avg": minicnn.AvgPool2D}[kind](2)
        x = self.data(shape)
        dout = self.data((shape[0], shape[1], shape[2] // 2, shape[3] // 2), seed=1)
        return lambda: (layer.forward(x), layer.backward(dout))

    def train_step(self, batch, size, network="catdog-small"):
        model, loss_fn = NETWORKS[network](size, 2)
        optimizer = SGD(model, lr=0.01, momentum=0.9)
        x = self.data((batch, 3, size, size))
        labels = self.backend.asarray(np.arange(batch) % 2)

        def step():
            loss_fn.forward(model.forward(x), labels)
            model.backward(loss_fn.backward(), input_grad=False)  # as in PyTorch, no gradient for the data
            optimizer.step()
        return step

    def inference(self, batch, size):
        model, _ = catdog_small(size, 2)
        model.eval()
        x = self.data((batch, 3, size, size))
        return lambda: model.forward(x)


# --- PyTorch ------------------------------------------------------------------
class Theirs:
    def __init__(self, backend):
        self.device = "cuda" if backend == "cupy" else "cpu"
        self.sync = torch.cuda.synchronize if self.device == "cuda" else (lambda: None)

    def data(self, shape, seed=0, grad=False):
        x = torch.tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), device=self.device)
        return x.requires_grad_(grad)

    def conv(self, shape, filters, backward):
        layer = torch.nn.Conv2d(shape[1], filters, 3, padding=1).to(self.device)
        x = self.data(shape, grad=backward)
        dout = self.data((shape[0], filters, shape[2], shape[3]), seed=1)
        if not backward:
            def forward():
                with torch.no_grad():
                    layer(x)
            return forward
        return lambda: layer(x).backward(dout)

    def pool(self, kind, shape):
        fn = {"max": torch.nn.functional.max_pool2d, "avg": torch.nn.functional.avg_pool2d}[kind]
        x = self.data(shape, grad=True)
        dout = self.data((shape[0], shape[1], shape[2] // 2, shape[3] // 2), seed=1)
        return lambda: fn(x, 2).backward(dout)

    def model(self, size):
        nn = torch.nn
        layers, channels = [], 3
        for width in (32, 64, 128):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        layers += [nn.Flatten(), nn.Linear(channels * (size // 8) ** 2, 128), nn.ReLU(), nn.Linear(128, 2)]
        return nn.Sequential(*layers).to(self.device)

    def resnet(self):
        """catdog-resnet (minicnn/architectures.py) in PyTorch: the same layers, in the same order."""
        nn = torch.nn

        class Block(nn.Module):
            def __init__(self, cin, cout, stride):
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(),
                                          nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout))
                same = cin == cout and stride == 1
                self.shortcut = nn.Identity() if same else nn.Sequential(nn.Conv2d(cin, cout, 1, stride),
                                                                          nn.BatchNorm2d(cout))

            def forward(self, x):
                return self.body(x) + self.shortcut(x)
        layers, channels = [nn.Conv2d(3, 32, 5, 2, 2), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2)], 32
        for width, stride in ((32, 1), (64, 2), (128, 2), (256, 2)):
            layers += [Block(channels, width, stride), nn.ReLU()]
            channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(channels, 2)]
        return nn.Sequential(*layers).to(self.device)

    def train_step(self, batch, size, network="catdog-small"):
        model = self.model(size) if network == "catdog-small" else self.resnet()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = self.data((batch, 3, size, size))
        labels = torch.tensor(np.arange(batch) % 2, device=self.device)

        def step():
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), labels).backward()
            optimizer.step()
        return step

    def inference(self, batch, size):
        model = self.model(size).eval()
        x = self.data((batch, 3, size, size))

        def forward():
            with torch.no_grad():
                model(x)
        return forward


NETWORKS = {"catdog-small": catdog_small, "catdog-resnet": catdog_resnet}


def layer_profile(backend, batch, size, repeats, network="catdog-small"):
    """Median forward and backward milliseconds of each layer of the network's training step."""
    b = minicnn.use_backend(backend)
    model, loss_fn = NETWORKS[network](size, 2)
    x = b.asarray(np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32))
    labels = b.asarray(np.arange(batch) % 2)
    times = {i: ([], []) for i in range(len(model))}
    for _ in range(repeats + 1):
        h = x
        for i, layer in enumerate(model):
            start = time.perf_counter()
            h = layer.forward(h)
            b.synchronize()
            times[i][0].append(time.perf_counter() - start)
        loss_fn.forward(h, labels)
        d = loss_fn.backward()
        for i in reversed(range(len(model))):
            start = time.perf_counter()
            model[i].needs_input_grad = i > 0  # as in the training step: no gradient for the data
            d = model[i].backward(d)
            b.synchronize()
            times[i][1].append(time.perf_counter() - start)
    return [(model[i].describe(), statistics.median(f[1:]) * 1e3, statistics.median(bw[1:]) * 1e3)
            for i, (f, bw) in times.items()]


# --- memory -------------------------------------------------------------------
def matrix_products(network, batch, size, backend):
    """The matrix products of ``network``'s training step on a batch of ``batch`` images of ``size`` x ``size``:
    ``(kind, (G, m, k), (G, k, n))`` for each, in the step's order of layers; kind is "forward", "weights"
    (dW) or "input" (dx, left out for the first layer with parameters, as the step skips it). A Conv2D's are
    ``W @ cols``, ``dy @ cols.T`` and ``W.T @ dy`` per group of G; a Dense's ``x @ W``, ``x.T @ dy``, ``dy @ W.T``."""
    model, _ = build(network, size, 2, backend)
    products = []

    def record(phase, name, layer, x, y):
        if phase != "forward":
            return
        if isinstance(layer, Conv2D):
            g, (kh, kw) = layer.groups, layer.kernel_size
            f, k, p = layer.out_channels // g, layer.in_channels // g * kh * kw, y.shape[0] * y.shape[2] * y.shape[3]
            shapes = dict(forward=((g, f, k), (g, k, p)), weights=((g, f, p), (g, p, k)), input=((g, k, f), (g, f, p)))
        elif isinstance(layer, Dense):
            n, i, o = x.shape[0], x.shape[1], y.shape[1]
            shapes = dict(forward=((1, n, i), (1, i, o)), weights=((1, i, n), (1, n, o)), input=((1, n, o), (1, o, i)))
        else:
            return
        for kind, (a, b) in shapes.items():
            if kind != "input" or products:  # the first layer with parameters computes no dx
                products.append((kind, a, b))

    x = backend.asarray(np.zeros((batch, 3, size, size), np.float32))
    with model.hooked(record):
        model.forward(x)
    return products


def gemm_floor(network, batch, size, backend, repeats, kinds=("forward", "weights", "input")):
    """The floor of ``network``'s step: its matrix products alone (:func:`matrix_products`, those of ``kinds``),
    on ready contiguous float32 operands, timed with the backend's own matmul (median seconds of all of them)."""
    xp, rng = backend.xp, np.random.default_rng(0)
    operands = [(backend.asarray(rng.random(a, np.float32)), backend.asarray(rng.random(b, np.float32)))
                for kind, a, b in matrix_products(network, batch, size, backend) if kind in kinds]
    return median_time(lambda: [xp.matmul(a, b) for a, b in operands], backend.synchronize, repeats)


def _proc_status_kib(field):
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith(field + ":")))


def peak_memory_child(library, backend, batch, size):
    """Run in a fresh subprocess: the peak memory (bytes) of building the network and data and
    running one training step, above what the process held before.

    CPU: growth of the peak resident set size (Linux; the peak is reset first through
    /proc/self/clear_refs). GPU: CuPy's pool size (it keeps every block it ever needed)
    or PyTorch's peak allocation."""
    if backend == "numpy":
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak (VmHWM) to the current resident size
        before = _proc_status_kib("VmRSS")
    elif library == "torch":
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    impl = (Ours if library == "minicnn" else Theirs)(backend)
    impl.train_step(batch, size)()
    impl.sync()
    if backend == "numpy":
        return (_proc_status_kib("VmHWM") - before) * 1024
    if library == "torch":
        return torch.cuda.max_memory_allocated()
    import cupy
    return cupy.get_default_memory_pool().total_bytes()


def peak_memory(library, backend, batch, size):
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import run; "
            f"print(run.peak_memory_child({library!r}, {backend!r}, {batch}, {size}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def matmul_peak(backend, repeats):
    """Measured float32 matrix-multiply throughput (GFLOP/s) of the backend's BLAS."""
    b = minicnn.get_backend(backend)
    n = 2048
    a = b.asarray(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32))
    seconds = median_time(lambda: a @ a, b.synchronize, repeats)
    return 2 * n ** 3 / seconds / 1e9


# --- the run ------------------------------------------------------------------
def run(args):
    ours = Ours(args.backend)
    theirs = Theirs(args.backend) if torch is not None else None
    conv_cases = QUICK_CONV_CASES if args.quick else CONV_CASES
    pool_shape = QUICK_POOL_SHAPE if args.quick else POOL_SHAPE
    batch, size, infer_batch = (4, 16, 8) if args.quick else (64, 64, 256)
    repeats = 1 if args.quick else args.repeats
    rows = []

    def measure(name, make, flops=None, target=None, floor=None):
        mine = median_time(make(ours), ours.sync, repeats)
        ref = median_time(make(theirs), theirs.sync, repeats) if theirs is not None else None
        floor = floor() if floor else None  # timed right after the case, on the same warm machine
        rows.append(dict(case=name, minicnn_ms=mine * 1e3, torch_ms=ref * 1e3 if ref else None,
                         ratio=mine / ref if ref else None, gflops=flops / mine / 1e9 if flops else None, target=target,
                         floor_ms=floor * 1e3 if floor else None))
        r = rows[-1]
        print(f"{name:<44} {r['minicnn_ms']:9.2f} ms" + (f"  torch {r['torch_ms']:9.2f} ms  ratio {r['ratio']:5.2f}" if ref else "")
              + (f"  {r['gflops']:6.1f} GFLOP/s" if flops else "")
              + (f"  GEMM floor {floor * 1e3:.2f} ms: x{mine / floor:.2f}" + (f" (torch x{ref / floor:.2f})" if ref else "")
                 if floor else ""), flush=True)

    def floor_of(network, batch, size, kinds=("forward", "weights", "input")):
        return lambda: gemm_floor(network, batch, size, ours.backend, repeats, kinds)

    peak = matmul_peak(args.backend, repeats)
    print(f"float32 matmul peak ({args.backend}): {peak:.1f} GFLOP/s")
    for shape, filters in conv_cases:
        n, c, h, w = shape
        flops = 2 * n * filters * h * w * c * 9
        label = f"({n},{c},{h},{w})->{filters}"
        measure(f"Conv2D forward {label}", lambda impl: impl.conv(shape, filters, False), flops)
        measure(f"Conv2D forward+backward {label}", lambda impl: impl.conv(shape, filters, True), 3 * flops, 1.3)
    for kind in ("max", "avg"):
        measure(f"{kind.capitalize()}Pool2D 2x2 forward+backward {pool_shape}", lambda impl: impl.pool(kind, pool_shape),
                target=1.0 if kind == "max" else None)
    measure(f"train step catdog-small, batch {batch}, {size}x{size}", lambda impl: impl.train_step(batch, size), target=1.0,
            floor=floor_of("catdog-small", batch, size))
    resnet_batch, resnet_size = (4, 32) if args.quick else (32, 96)
    measure(f"train step catdog-resnet, batch {resnet_batch}, {resnet_size}x{resnet_size}",
            lambda impl: impl.train_step(resnet_batch, resnet_size, "catdog-resnet"), target=1.0,
            floor=floor_of("catdog-resnet", resnet_batch, resnet_size))
    measure(f"inference catdog-small, batch {infer_batch}", lambda impl: impl.inference(infer_batch, size), target=0.8,
            floor=floor_of("catdog-small", infer_batch, size, kinds=("forward",)))
    if not args.quick:
        mine = peak_memory("minicnn", args.backend, batch, size)
        ref = peak_memory("torch", args.backend, batch, size) if torch is not None else None
        rows.append(dict(case=f"peak memory of a train step incl. model and data (MiB), batch {batch}", minicnn_ms=mine / 2 ** 20,
                         torch_ms=ref / 2 ** 20 if ref else None, ratio=mine / ref if ref else None, gflops=None, target=1.5))
        print(f"peak memory: minicnn {mine / 2 ** 20:.0f} MiB" + (f", torch {ref / 2 ** 20:.0f} MiB" if ref else ""))
    profiles = {f"catdog-small, batch {batch}, {size}x{size}": layer_profile(args.backend, batch, size, repeats),
                f"catdog-resnet, batch {resnet_batch}, {resnet_size}x{resnet_size}":
                    layer_profile(args.backend, resnet_batch, resnet_size, repeats, "catdog-resnet")}
    return rows, peak, profiles


def describe_machine(backend):
    lines = [f"- date: {datetime.date.today().isoformat()}", f"- python {platform.python_version()}, numpy {np.__version__}"
             + (f", torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else ", torch not installed")]
    if backend == "cupy":
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(0)
        lines.append(f"- GPU: {props['name'].decode()}, cupy {cupy.__version__}")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
        cpu += ", vector extensions: " + " ".join(sorted({f for f in flags if f.startswith(("avx", "fma"))}))
    except (OSError, StopIteration):
        pass
    lines.append(f"- CPU: {cpu}, {os.cpu_count()} cores visible; minicnn threads: {minicnn.num_threads()}")
    return "\n".join(lines)


def write_results(rows, peak, profiles, backend, path, notes):
    lines = [f"# Benchmark results ({'GPU: CuPy vs PyTorch CUDA' if backend == 'cupy' else 'CPU: NumPy vs PyTorch'})", "",
             describe_machine(backend), f"- float32 matmul peak measured in the same run: {peak:.1f} GFLOP/s", "",
             "Times are medians after warm-up; ratio = minicnn / PyTorch (below 1: minicnn is faster). The GEMM floor "
             "of a step is its matrix products alone (every convolution's and dense layer's forward, weight-gradient "
             "and input-gradient products; inference: the forward ones), timed with NumPy's matmul on ready operands "
             "in the same run: no NumPy code can go under it; ÷ floor is each library's time over it.", "",
             "| case | minicnn | PyTorch | ratio | target | met | GFLOP/s | GEMM floor | minicnn ÷ floor | PyTorch ÷ floor |",
             "|---|---:|---:|---:|---:|:-:|---:|---:|---:|---:|"]
    for r in rows:
        unit = " MiB" if "memory" in r["case"] else " ms"
        met = "" if r["ratio"] is None or r["target"] is None else ("yes" if r["ratio"] <= r["target"] else "**no**")
        floor = r.get("floor_ms")
        lines.append(f"| {r['case']} | {r['minicnn_ms']:.4g}{unit} | "
                     + (f"{r['torch_ms']:.4g}{unit} | {r['ratio']:.2f} |" if r["torch_ms"] else "– | – |")
                     + (f" ≤ {r['target']} |" if r["target"] else " |") + f" {met} |"
                     + (f" {r['gflops']:.1f} |" if r["gflops"] else " |")
                     + (f" {floor:.4g} ms | {r['minicnn_ms'] / floor:.2f} | "
                        + (f"{r['torch_ms'] / floor:.2f} |" if r["torch_ms"] else "– |") if floor else " | | |"))
    for network, profile in profiles.items():
        total = sum(f + b for _, f, b in profile)
        lines += ["", f"## Where the time of the {network} training step goes", "",
                  "Each layer timed on its own (medians), forward and backward:", "",
                  "| layer | forward ms | backward ms | share |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {f:.2f} | {b:.2f} | {100 * (f + b) / total:.0f}% |" for name, f, b in profile]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n\n" + notes)


def plot_ratios(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no chart)")
        return
    rows = [r for r in rows if r["ratio"] is not None]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1))
    ax.barh([r["case"] for r in rows][::-1], [r["ratio"] for r in rows][::-1], color="tab:blue")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("time (memory) ratio minicnn / PyTorch — below 1 is better")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    p.add_argument("--quick", action="store_true", help="tiny shapes, one repeat: checks the harness only")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=None, help="results markdown (default benchmarks/RESULTS.md, or RESULTS-gpu.md for cupy)")
    p.add_argument("--notes", default=os.path.join(HERE, "NOTES.md"), help="text appended to the results (analysis)")
    args = p.parse_args(argv)
    rows, peak, profiles = run(args)
    out = args.out or os.path.join(HERE, "RESULTS-gpu.md" if args.backend == "cupy" else "RESULTS.md")
    notes = open(args.notes).read() if args.notes and os.path.exists(args.notes) else ""
    write_results(rows, peak, profiles, args.backend, out, notes)
    plot_ratios(rows, os.path.splitext(out)[0] + ".png")
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
