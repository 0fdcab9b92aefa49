"""fastscarlet: fast one-shot NAS in the ScarletNAS family (SCARLET, FairNAS, MoGA).

Data flows one way: space -> arch -> supernet/subnet -> trainer/evaluator -> search -> export.
Importing the package is cheap and never fails because of an optional component (CUDA, Triton,
DALI, the C++ extension); see :mod:`fastscarlet.env`.
"""

__version__ = "0.1.0"
