"""hvd_trainer: Ludwig's ECD trainer on Horovod, for modern PyTorch and clusters."""
import os

from setuptools import find_packages, setup

# torch is pinned for reproducible CI; users who bring their own build (CUDA, ROCm) set
# HVD_TRAINER_TORCH_SPEC, which scripts/setup.sh installs before this package.
TORCH_SPEC = os.environ.get("HVD_TRAINER_TORCH_SPEC", "torch>=2.1")
README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")


def long_description() -> str:
    """README.md, when it is there: the Docker image installs the dependencies from setup.py alone, so that
    editing the README does not reinstall them (docker/Dockerfile's build stage)."""
    if not os.path.exists(README):
        return ""
    with open(README) as fh:
        return fh.read()


setup(
    name="hvd_trainer",
    version="0.1.0",
    description="Data-parallel PyTorch training on Horovod and MPI, from a laptop to a SLURM cluster.",
    long_description=long_description(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["hvd_trainer", "hvd_trainer.*"]),
    package_data={"hvd_trainer": ["examples/*.yaml"]},
    install_requires=[
        TORCH_SPEC,
        "horovod==0.28.1",
        "mpi4py>=3.1",
        "tensorboard>=2.10",
        "google-crc32c>=1.5",  # event-file checksums in C (hvd_trainer/event_file.py)
        "pyyaml>=6",
        "numpy",
        "tqdm",
        "pyarrow",
        "scikit-learn",
        "matplotlib",
        "python-dateutil",  # date features parse values without a datetime_format
    ],
    extras_require={
        # `export --format onnx`: torch writes ONNX with `onnx`; the export is checked in onnxruntime.
        "export": ["onnx", "onnxruntime"],
        # trainer.mlflow / train --mlflow-tracking-uri (the client only; a server is not needed for file: stores).
        "mlflow": ["mlflow-skinny"],
        "test": ["pytest>=7", "pytest-timeout", "onnx", "onnxruntime", "mlflow-skinny"],
    },
    entry_points={"console_scripts": ["hvd_trainer=hvd_trainer.cli:main"]},
)
