"""Build and install fastscarlet.

The package lives in ``fastscarlet/``; the Triton kernels live in the top-level ``kernels/`` folder and
install as ``fastscarlet.kernels`` (the name ``kernels`` is taken on PyPI). The C++ sources in
``csrc/`` build to ``fastscarlet._C`` with pybind11.
"""

from glob import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

packages = find_packages(include=["fastscarlet", "fastscarlet.*"]) + ["fastscarlet.kernels"]

ext_modules = [
    Pybind11Extension(
        "fastscarlet._C",
        sorted(glob("csrc/*.cpp")),
        cxx_std=17,
        extra_compile_args=["-O3"],
    )
]

setup(
    name="fastscarlet",
    version="0.1.0",
    description="Fast one-shot NAS in the ScarletNAS family: SCARLET/FairNAS/MoGA supernets, "
    "strict-fairness training, NSGA-II search, Triton kernels.",
    python_requires=">=3.10",
    packages=packages,
    package_dir={"fastscarlet.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext},
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "numpy>=1.24",
        "pyyaml>=6",
        "tqdm>=4.60",
    ],
    extras_require={
        "dali": ["nvidia-dali-cuda130>=2.0"],
        "triton": ["triton>=3.0"],
        "tensorboard": ["tensorboard>=2.10"],
    },
    entry_points={"console_scripts": ["fastscarlet=fastscarlet.cli:main"]},
    zip_safe=False,
)
