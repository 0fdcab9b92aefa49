"""The DALI backend: NVIDIA DALI pipelines over the shared file list.

Decoding runs on the GPU (``mixed``: nvJPEG / the hardware JPEG decoder) when the target device is
CUDA, and on the CPU (libjpeg-turbo, ``device_id=None``: no GPU needed) otherwise. The train
transform decodes only the random crop's region (``decoders.image_random_crop``: crop-on-decode)
and resizes it; the eval transform resizes the shorter side and center crops in one fused
``resize_crop_mirror`` that computes only the kept region. ``crop_mirror_normalize`` then flips,
normalises and lays out the batch: CHW, or HWC that torch sees as a channels_last NCHW tensor
without a copy. When the whole pipeline runs on the CPU, the imagenet recipe's resize, crop, flip
and normalisation are instead one pass of fastscarlet's own DALI operator
(:mod:`fastscarlet.data.dali_ops`: Pillow's filter, about twice as fast as DALI's CPU resize);
``dali_ops="dali"`` keeps DALI's operators.

Order and sharding: every epoch a pipeline is built whose file reader gets exactly this rank's
files in :func:`fastscarlet.data.sharding.epoch_order` (so the torch and DALI backends read the same
files in the same order), with ``random_shuffle=False``: DALI's own shuffle is a buffer of
``initial_fill`` samples, far from a permutation on a class-sorted ImageNet list. The reader's
labels are *positions* in that list; the class labels and sample indices are looked up from them,
so every delivered sample is accounted for.

Corrupt files: the scan (``verify="header"``) leaves out what it can see. If a DALI decoder still
fails, the pipeline is dead (DALI's rule); the loader decodes the batch's candidate files with PIL
to find the culprit, records it in ``skipped``, replaces it by a placeholder that is dropped from
the batch, and rebuilds the pipeline at the same batch boundary. A batch whose files all fail is
skipped (and its files counted), and so is the rest of an epoch in which nothing decodes, as the
torch backend does. If no culprit is found, it raises an error with DALI's message and the
candidate files.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from fastscarlet.data import dali_ops as plugin
from fastscarlet.data.base import ImageLoader
from fastscarlet.data.folder import FileList, check_image
from fastscarlet.data.transforms import Recipe
from fastscarlet.env import require

# DALI's ImageNet examples: scratch memory for nvJPEG sized for the largest ImageNet images, so
# that the decoder does not reallocate during the first epoch.
_DEVICE_MEMORY_PADDING = 211_025_920
_HOST_MEMORY_PADDING = 140_544_512
_PREFETCH = 2  # batches the pipeline runs ahead
DALI_OPS = ("auto", "fastscarlet", "dali")


class DaliImageLoader(ImageLoader):
    """Batches from DALI pipelines (needs ``nvidia-dali-cuda130``; CPU pipelines need no GPU)."""

    backend = "dali"

    def __init__(
        self,
        files: FileList,
        recipe: Recipe,
        *,
        num_threads: int,
        decode_device: str | None = None,
        dali_ops: str = "auto",
        **kwargs,
    ):
        require("dali")
        super().__init__(files, recipe, **kwargs)
        if self.device.type == "cuda":
            self.device_id: int | None = (
                self.device.index if self.device.index is not None else torch.cuda.current_device()
            )
            decode_device = decode_device or "mixed"
        elif self.device.type == "cpu":
            self.device_id = None
            decode_device = decode_device or "cpu"
            if decode_device != "cpu":
                raise ValueError(
                    f"decode_device={decode_device!r} needs a CUDA device; got device={self.device}"
                )
        else:
            raise ValueError(f"the DALI backend delivers to cpu or cuda, got device={self.device}")
        if decode_device not in ("cpu", "mixed"):
            raise ValueError(f"decode_device must be 'cpu' or 'mixed', got {decode_device!r}")
        self.decode_device = decode_device
        self.num_threads = num_threads
        if dali_ops not in DALI_OPS:
            raise ValueError(f"dali_ops must be one of {DALI_OPS}, got {dali_ops!r}")
        # fastscarlet's operator is CPU-only: on a GPU pipeline DALI's own resize is the fast one.
        fits = self.device.type == "cpu" and recipe.name == "imagenet"
        if dali_ops == "fastscarlet" and not (fits and plugin.load()):
            raise ValueError(
                "dali_ops='fastscarlet' needs the imagenet recipe on a CPU pipeline and the built "
                f"plugin (found: {plugin.library_path()})"
            )
        self.fused = fits and dali_ops != "dali" and plugin.load()
        self._labels = torch.as_tensor(files.labels, dtype=torch.int64)
        self._copy_stream = None  # CUDA stream for DALI -> torch copies, made on first use

    # -- the pipeline --------------------------------------------------------------------------
    def _pipeline(self, paths: list[str], positions: list[int], seed: int, prefetch: int):
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import Pipeline

        r = self.recipe
        size = r.image_size
        pipe = Pipeline(
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device_id=self.device_id,
            seed=seed,
            prefetch_queue_depth=prefetch,
            exec_dynamic=True,  # outputs live as long as they are referenced: zero-copy to torch
        )
        mixed = self.decode_device == "mixed"
        decode_args = dict(device=self.decode_device, output_type=types.RGB)
        if mixed:
            decode_args.update(
                device_memory_padding=_DEVICE_MEMORY_PADDING,
                host_memory_padding=_HOST_MEMORY_PADDING,
            )
        linear = dict(interp_type=types.INTERP_LINEAR, antialias=True)  # PIL's BILINEAR
        with pipe:
            encoded, position = fn.readers.file(
                files=paths, labels=positions, random_shuffle=False, name="Reader"
            )
            crop_args: dict = {}
            mirror = 0
            if self.fused:  # the imagenet recipe on the CPU: one pass of fastscarlet's operator
                if r.train:
                    images = fn.decoders.image_random_crop(
                        encoded,
                        random_area=list(r.crop_scale),
                        random_aspect_ratio=list(r.crop_ratio),
                        num_attempts=10,
                        **decode_args,
                    )
                    geometry: dict = dict(size=(size, size))
                    mirror = fn.random.coin_flip(probability=0.5)
                else:
                    images = fn.decoders.image(encoded, **decode_args)
                    geometry = dict(resize_shorter=r.resize_size, crop=(size, size))
                images = plugin.resize_mirror_normalize(
                    images,
                    mean=r.mean,
                    std=r.std,
                    mirror=mirror,
                    channels_last=self.channels_last,
                    **geometry,
                )
            elif r.name == "imagenet" and r.train:
                images = fn.decoders.image_random_crop(
                    encoded,
                    random_area=list(r.crop_scale),
                    random_aspect_ratio=list(r.crop_ratio),
                    num_attempts=10,
                    **decode_args,
                )
                images = self._to_target(images)
                images = fn.resize(images, resize_x=size, resize_y=size, **linear)
                mirror = fn.random.coin_flip(probability=0.5)
            else:
                images = self._to_target(fn.decoders.image(encoded, **decode_args))
                images = fn.resize_crop_mirror(
                    images, resize_shorter=r.resize_size, crop=(size, size), **linear
                )
                if r.train:  # cifar: zero-pad, then one of (2p+1)^2 crops, flip
                    p = r.padding
                    images = fn.crop(
                        images,
                        crop=(size + 2 * p, size + 2 * p),
                        out_of_bounds_policy="pad",
                        fill_values=0,
                    )
                    # crop_pos in {0, 1/2p, ..., 1}: a uniform integer offset in [0, 2p].
                    steps = [k / (2 * p) for k in range(2 * p + 1)] if p else [0.5]
                    crop_args = dict(
                        crop=(size, size),
                        crop_pos_x=fn.random.uniform(values=steps),
                        crop_pos_y=fn.random.uniform(values=steps),
                    )
                    mirror = fn.random.coin_flip(probability=0.5)
            if not self.fused:
                fp16 = self.dtype == torch.float16
                images = fn.crop_mirror_normalize(
                    images,
                    dtype=types.FLOAT16 if fp16 else types.FLOAT,
                    output_layout="HWC" if self.channels_last else "CHW",
                    mean=[255 * m for m in r.mean],
                    std=[255 * s for s in r.std],
                    mirror=mirror,
                    **crop_args,
                )
            pipe.set_outputs(images, position)
        pipe.build()
        return pipe

    def _to_target(self, images):
        """CPU-decoded images go to the GPU right after decoding when the target is CUDA."""
        if self.device_id is not None and self.decode_device == "cpu":
            return images.gpu()
        return images

    def _to_torch(self, dali_images) -> torch.Tensor:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        if self.device.type == "cpu":
            # The dynamic executor hands over the batch's memory: DALI does not reuse it while a
            # tensor refers to it (its PyTorch plugin does the same), so no copy is needed.
            out = torch.from_dlpack(dali_images.as_tensor())
        else:  # crop_mirror_normalize made float16 or float32
            shapes = dali_images.shape()
            dtype = torch.float16 if self.dtype == torch.float16 else torch.float32
            out = torch.empty((len(shapes), *shapes[0]), dtype=dtype, device=self.device)
            # Copy on a side stream and wait for it (tens of microseconds for a batch): the DALI
            # buffer is then free for the next run and the tensor ready on any stream, without
            # making the caller's stream (busy with the previous training step) wait.
            if self._copy_stream is None:
                self._copy_stream = torch.cuda.Stream(self.device)
            feed_ndarray(dali_images.as_tensor(), out, cuda_stream=self._copy_stream)
            self._copy_stream.synchronize()
        if self.channels_last:
            out = out.permute(0, 3, 1, 2)  # NHWC storage = NCHW in channels_last format
        if out.dtype != self.dtype:
            memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
            out = out.to(dtype=self.dtype, memory_format=memory_format)
        return out

    # -- the epoch -----------------------------------------------------------------------------
    def _iter_epoch(
        self, batches: list[np.ndarray]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        if not batches:
            return
        order = np.concatenate(batches)  # this rank's samples, batch after batch
        total = len(order)
        paths = self.files.paths
        bad: set[int] = set()  # positions replaced by a placeholder and dropped from their batch
        placeholder: str | None = None
        pos = 0  # next position to deliver; always a batch boundary
        non_blocking = self.device.type == "cuda"
        while pos < total:
            seed_seq = np.random.SeedSequence([self.seed, self.epoch, self.rank, pos])
            seed = int(seed_seq.generate_state(1)[0] >> 1)  # DALI takes a non-negative int32
            feed = [placeholder if p in bad else paths[order[p]] for p in range(pos, total)]
            # Schedule exactly the batches left: Pipeline.run() would compute one batch past the
            # end of the list (wrapping around), 8% more work on a 12-batch epoch.
            remaining = -(-(total - pos) // self.batch_size)
            depth = min(_PREFETCH, remaining)
            pipe = self._pipeline(feed, list(range(pos, total)), seed, depth)
            scheduled = 0
            try:
                while pos < total:
                    if scheduled == 0:
                        pipe.schedule_run()  # the first call fills the queue: `depth` batches
                        scheduled = depth
                    elif scheduled < remaining:
                        pipe.schedule_run()
                        scheduled += 1
                    images, positions = pipe.outputs()
                    n = min(self.batch_size, total - pos)
                    got = np.asarray(positions.as_array()).reshape(-1)[:n]
                    if not np.array_equal(got, np.arange(pos, pos + n)):
                        raise RuntimeError(f"DALI delivered positions {got[:8]}..., expected {pos}")
                    keep = [i for i, p in enumerate(range(pos, pos + n)) if p not in bad]
                    start, pos = pos, pos + n
                    if not keep:
                        continue  # every file of the batch failed: nothing to deliver (as torch)
                    batch = self._to_torch(images)[:n]
                    indices = torch.from_numpy(order[start : start + n][keep])
                    if len(keep) < n:
                        batch = batch[torch.as_tensor(keep, dtype=torch.long, device=batch.device)]
                    yield (
                        batch,
                        self._labels[indices].to(self.device, non_blocking=non_blocking),
                        indices.to(self.device, non_blocking=non_blocking),
                    )
            except RuntimeError as exc:
                if "DALI delivered positions" in str(exc):
                    raise
                del pipe
                found = self._find_culprits(order, pos, total, bad, str(exc))
                if not found:
                    window = range(pos, min(total, pos + (_PREFETCH + 1) * self.batch_size))
                    names = ", ".join(paths[order[p]] for p in window if p not in bad)
                    raise RuntimeError(
                        f"DALI failed on a batch of epoch {self.epoch} and no file among the "
                        f"candidates fails to decode with PIL. DALI said: {exc}\n"
                        f"candidates: {names}"
                    ) from exc
                bad.update(found)
                if placeholder is None:
                    placeholder = self._good_file(order, pos, total, bad)
                    if placeholder is None:  # nothing left decodes: all skipped, as torch would
                        self._skip_the_rest(order, pos, total, bad)
                        return

    def _find_culprits(
        self, order: np.ndarray, pos: int, total: int, bad: set[int], message: str
    ) -> set[int]:
        """Positions (from ``pos``) of files that a decoder cannot read, among those DALI was on."""
        paths = self.files.paths
        # The pipeline can be up to _PREFETCH batches ahead of what was delivered.
        window = range(pos, min(total, pos + (_PREFETCH + 1) * self.batch_size))
        found = set()
        for p in window:
            if p in bad:
                continue
            path = paths[order[p]]
            reason = check_image(path, "decode")
            if reason is None and path in message:
                reason = "DALI cannot decode it"  # DALI names it; PIL reads it
            if reason is not None:
                found.add(p)
                self._record_failure(int(order[p]), reason)
        return found

    def _good_file(self, order: np.ndarray, pos: int, total: int, bad: set[int]) -> str | None:
        """A file that decodes, to stand in for the bad ones (its samples are dropped); ``None``
        when the epoch has none."""
        for p in [*range(pos, total), *range(pos)]:
            if p not in bad and check_image(self.files.paths[order[p]], "decode") is None:
                return self.files.paths[order[p]]
        return None

    def _skip_the_rest(self, order: np.ndarray, pos: int, total: int, bad: set[int]) -> None:
        """Record the files from ``pos`` on that are not recorded yet: none of them decodes."""
        for p in range(pos, total):
            if p not in bad:
                bad.add(p)
                path = self.files.paths[order[p]]
                self._record_failure(int(order[p]), check_image(path, "decode") or "no decoder")
