"""Build and install fastscarlet.

The package lives in ``fastscarlet/``; the Triton kernels live in the top-level ``kernels/`` folder and
install as ``fastscarlet.kernels`` (the name ``kernels`` is taken on PyPI). The C++ sources in
``csrc/`` build to ``fastscarlet._C`` with pybind11. Where NVIDIA DALI and the CUDA headers it
includes are present, ``csrc/dali_ops/`` builds to ``fastscarlet/data/_dali_ops*.so``, a DALI plugin
with fastscarlet's CPU operators (see ``fastscarlet/data/dali_ops.py``); without them it is skipped
and the DALI backend uses DALI's own operators.
"""

import os
import sys
from glob import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import Extension, find_packages, setup

packages = find_packages(include=["fastscarlet", "fastscarlet.*"]) + ["fastscarlet.kernels"]

ext_modules = [
    Pybind11Extension(
        "fastscarlet._C",
        sorted(glob("csrc/*.cpp")),
        cxx_std=17,
        extra_compile_args=["-O3"],
    )
]


def cuda_include_dir() -> str | None:
    """A CUDA include folder complete enough for DALI's headers (they include cuda_runtime.h)."""
    roots = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda", *sorted(glob("/usr/local/cuda-*"))]
    for root in filter(None, roots):
        inc = os.path.join(root, "include")
        if all(os.path.exists(os.path.join(inc, f)) for f in ("cuda_runtime.h", "nv/target")):
            return inc
    return None


def dali_extension() -> Extension | None:
    """The DALI plugin, if DALI and the CUDA headers are here (else None, with a note)."""
    try:
        import nvidia.dali.sysconfig as dali_sysconfig
    except ImportError:
        return None
    cuda_inc = cuda_include_dir()
    if cuda_inc is None:
        print(
            "fastscarlet: no CUDA headers found (set CUDA_HOME); skipping the DALI plugin",
            file=sys.stderr,
        )
        return None
    lib_dir = dali_sysconfig.get_lib_dir()
    return Extension(
        "fastscarlet.data._dali_ops",
        sorted(glob("csrc/dali_ops/*.cc")),
        include_dirs=[cuda_inc],
        runtime_library_dirs=[lib_dir],
        # DALI's own flags (its include folder, its C++ ABI; -L and -ldali); C++20 for its
        # headers; no FMA contraction, so that the normalisation rounds as torch's does.
        extra_compile_args=[
            *dali_sysconfig.get_compile_flags(),
            "-std=c++20",
            "-O3",
            "-g0",
            "-ffp-contract=off",
            "-Wno-deprecated",
        ],
        extra_link_args=list(dali_sysconfig.get_link_flags()),
        language="c++",
    )


if (dali_ext := dali_extension()) is not None:
    ext_modules.append(dali_ext)

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
        # fastscarlet export --format onnx|timm, and the latency validation plot
        "export": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1", "timm>=1.0", "matplotlib"],
    },
    entry_points={"console_scripts": ["fastscarlet=fastscarlet.cli:main"]},
    zip_safe=False,
)
