"""Triton kernels of fastscarlet, installed as ``fastscarlet.kernels``.

Every kernel module carries its ``@triton.jit`` kernels and their host launchers. The building
blocks also carry a plain-PyTorch ``*_ref`` that their tests use as the oracle (``act_ref``,
``act_grad_ref``, ``batch_norm_ref``, ``depthwise_ref``, ``conv1x1_ref``); nothing runs them in
place of a kernel. What runs when a kernel does not, the fallback, is the code of the
``fastscarlet.nn`` modules (:mod:`.dispatch` decides), and the block-level ops (MBConv, LET) are
tested against those modules (which this package may not import). Contents:

* :mod:`.mbconv`: the fused MBConv choice block (inference and training): the entry point the
  modules call, its support check and autograd function; :mod:`.mbconv_kernels` (its two own
  kernels), :mod:`.mbconv_host` (the launch sequence), :mod:`.mbconv_ops` (custom ops and fakes);
  :mod:`.let`: the LET stabilizer and its fusion into the next expand conv;
* building blocks: :mod:`.pointwise` (1x1 GEMMs), :mod:`.depthwise`, :mod:`.batchnorm`,
  :mod:`.activations`, :mod:`.alignment` (channel-count hints), :mod:`.launch`;
* :mod:`.dispatch`: the one decision kernel vs reference (imports no Triton, so the modules of
  ``fastscarlet.nn.blocks`` import it unconditionally); :mod:`.testing`: the error budget used by
  the tests. (The sm_90 compilation checks without a GPU are a developer tool: ``tools/aot.py``.)

Importing this package never fails: Triton is imported only by the kernel modules, which the
modules load when :func:`~fastscarlet.kernels.dispatch.use_kernels` says so.
"""
