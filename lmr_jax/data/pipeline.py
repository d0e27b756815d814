"""The grain input pipeline: windows of T frames from datasets in the sequence schema.

Training (`train_dataset`): every dataset split (a `DatasetSpec`) is opened with
`tfds.data_source` (array_record, no TensorFlow) and cut into windows of T frames with a
per-dataset stride; each dataset's window list is shuffled with its own seed and repeated
(reshuffled every epoch); the datasets are interleaved by weight (`MapDataset.mix`: exactly
`weight / sum(weights)` of every stretch of windows, e.g. VIBE's 60% 2D-only); process p of P
takes global elements p, p + P, ... (so global batch k holds the same windows whatever the
process count); windows are read ahead by `num_threads` background threads (each window is cut
from its whole decoded video; decoded videos are kept in a bounded cache), batched, and reshaped
to `[num_local_devices, per_device_batch, T, ...]` for pmap.

Batches are dicts of numpy arrays: features [.., T, D], kp2d [.., T, 49, 3], kp3d [.., T, 49, 4],
pose [.., T, 72], shape [.., T, 10], cam [.., T, 3], has_smpl, has_kp3d and valid [.., T]
(float32). A video shorter than T gives one window padded with zeros; `valid` is 0 there.

Frames (`DatasetSpec.inputs='frames'`, for datasets with a `frames` field of JPEG bytes, such as
synthetic_motion/frames): `features` then holds the model's input images instead, [.., T, H, W,
3] float32 RGB normalised with ImageNet's mean and std (lmr_jax.data.extract.normalize; zeros
in padded frames), decoded with Pillow from the window's T JPEGs only (a cached video keeps its
JPEG bytes, not its pixels) and resized bilinearly to `image_size` when that is set and differs
from the stored size. The key stays `features`, the model input that training, evaluation and
prediction read, so every consumer works unchanged; the stored features are then not read.
Memory: a batch of 32 windows of 16 frames at 128 pixels is 100 MiB (at 224 pixels 308 MiB),
and `prefetch_buffer_size` windows are held ahead of it.

Resuming: the iterator of the returned `grain.IterDataset` has `get_state()` (a small dict) and
`set_state(state)`; the same seed, specs and state continue with the same batches. With orbax,
save it beside the model through grain's handler (grain 0.2.18: `grain.checkpoint`):

    manager = ocp.CheckpointManager(workdir, item_names=("state", "data"))
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(train_state),
        data=grain.checkpoint.CheckpointSave(iterator)))
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(iterator)))  # restores `iterator` in place

Each process writes its own `process_<i>-of-<n>.json`, so resume with the same process count.

Evaluation (`eval_videos`) yields whole videos in dataset order. Every video is validated
against the schema when first read; bad data raises `DatasetError` naming the dataset, the
video and the field.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import os
import threading
from collections.abc import Iterator, Sequence

import grain
import numpy as np

from lmr_jax.data.build import BUILD_COMMAND
from lmr_jax.data.schema import FIELDS, LAYOUT, DatasetError, validate_example

BATCH_FIELDS = ("features", "kp2d", "kp3d", "pose", "shape", "cam", "has_smpl", "has_kp3d")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One dataset split in a training mixture or an evaluation.

    Attributes:
      name: TFDS name with config (and optionally version), e.g. 'synthetic_motion/small'.
      split: 'train', 'validation', 'test' or a TFDS sub-split such as 'train[:10%]'.
      data_dir: the TFDS data directory (None: TFDS's default, ~/tensorflow_datasets).
      weight: relative share of this dataset's windows in the mixture.
      stride: frames between consecutive window starts (None: half the window).
      window: window length T for this dataset (None: the pipeline's).
      tail: an extra window per video ending at its last frame (see `window_index`).
      inputs: what `features` holds: 'features' (the stored features) or 'frames' (the decoded,
        normalised images of the `frames` field; see the module docstring).
      image_size: with inputs 'frames', the side the images are resized to (0: as stored).
    """

    name: str
    split: str = "train"
    data_dir: str | None = None
    weight: float = 1.0
    stride: int | None = None
    window: int | None = None
    tail: bool = True
    inputs: str = "features"
    image_size: int = 0

    @property
    def label(self) -> str:
        return f"{self.name}:{self.split}"


class _Source:
    """An opened dataset split: the TFDS data source, its video lengths, validation state."""

    def __init__(self, spec: DatasetSpec):
        import tensorflow_datasets as tfds  # heavy; only when a dataset is opened

        self.spec = spec
        data_dir = os.path.expanduser(spec.data_dir) if spec.data_dir else None
        shown_dir = data_dir or "~/tensorflow_datasets"
        how = BUILD_COMMAND.format(name=spec.name.split(":")[0], data_dir=shown_dir)
        try:
            builder = tfds.builder(spec.name, data_dir=data_dir)
        except tfds.core.DatasetNotFoundError:
            builder = None
        except (ValueError, AssertionError) as e:  # e.g. an unknown config or version
            reason = str(e).strip().splitlines()[0]
            raise DatasetError(f"dataset '{spec.name}' cannot be opened: {reason}") from None
        if builder is None or not builder.is_prepared():
            raise DatasetError(
                f"dataset '{spec.name}' is not built in {shown_dir}; build it with: {how}"
            )
        info = builder.info
        if spec.split.split("[")[0] not in info.splits:  # 'train' or e.g. 'train[:10%]'
            raise DatasetError(
                f"dataset '{spec.name}' has no split '{spec.split}', "
                f"expected one of {sorted(info.splits)}."
            )
        metadata = dict(info.metadata or {})
        self.metadata = metadata  # the builder's record (body, featurizer seed, ...)
        self.layout = metadata.get("layout")
        if self.layout != LAYOUT:
            declared = f"joint layout '{self.layout}'" if self.layout else "no joint layout"
            raise DatasetError(
                f"dataset '{spec.label}' declares {declared} in its metadata, expected '{LAYOUT}'."
            )
        self.data_source = builder.as_data_source(split=spec.split)
        if len(self.data_source) == 0:
            raise DatasetError(f"dataset '{spec.label}' has no videos.")
        self._validated: set[int] = set()
        # Decoded videos kept for reuse: filled up to `cache_limit` bytes and never evicted, so
        # a shuffled stream hits it in proportion to the share cached (no LRU churn).
        self.cache_limit = 0
        self._cache: dict[int, dict] = {}
        self._cache_bytes = 0
        self._lock = threading.Lock()
        dim = info.features["features"].shape[-1]
        self.feature_dim = int(dim) if dim else int(self.data_source[0]["features"].shape[-1])
        self.lengths = self._lengths(metadata.get("num_frames", {}).get(spec.split))
        # The source file's flags (schema.FILE_FLAGS) that the split really has.
        self.file_flags = tuple(metadata.get("file_flags", {}).get(spec.split.split("[")[0], ()))
        self.has_frames = "frames" in info.features

    def _lengths(self, recorded) -> np.ndarray:
        """Frames per video: from the metadata when the builder recorded them, else a scan."""
        if recorded is not None and len(recorded) == len(self.data_source):
            return np.asarray(recorded, np.int64)
        logging.info("Scanning %s for video lengths (not in its metadata).", self.spec.label)
        return np.asarray(
            [self.read(i)["features"].shape[0] for i in range(len(self.data_source))], np.int64
        )

    def clear_cache(self) -> None:
        """Drops the cached videos and turns the cache off (until a pipeline sets a limit)."""
        with self._lock:
            self._cache.clear()
            self._cache_bytes = 0
            self.cache_limit = 0

    @property
    def cached_videos(self) -> int:
        return len(self._cache)

    def read(self, index: int, cache: bool = False) -> dict:
        """Video `index` as a dict of numpy arrays, validated against the schema once.

        With `cache`, the decoded video may be kept and shared with later reads: callers must
        not modify its arrays.
        """
        index = int(index)
        example = self._cache.get(index)
        if example is not None:
            return example
        example = self.data_source[index]
        if index not in self._validated:
            validate_example(example, self.spec.label, feature_dim=self.feature_dim)
            frames, num = example.get("frames"), len(example["features"])
            if frames is not None and len(frames) != num:
                raise DatasetError(f"dataset '{self.spec.label}', video {index}: field 'frames' "
                                   f"holds {len(frames)} images, expected {num}.")  # fmt: skip
            self._validated.add(index)
        if cache:
            size = sum(getattr(v, "nbytes", 0) for v in example.values())
            with self._lock:
                if self._cache_bytes + size <= self.cache_limit and index not in self._cache:
                    self._cache[index] = example
                    self._cache_bytes += size
        return example


@functools.lru_cache(maxsize=32)
def _open(spec: DatasetSpec) -> _Source:
    return _Source(spec)


def open_dataset(spec: DatasetSpec) -> _Source:
    """Opens (and caches per process) a dataset split; raises DatasetError if unusable."""
    spec = dataclasses.replace(spec, weight=1.0, stride=None, window=None, tail=True)
    return _open(dataclasses.replace(spec, inputs="features", image_size=0))


INPUTS = ("features", "frames")


def _check_inputs(spec: DatasetSpec, source: _Source) -> None:
    if spec.inputs not in INPUTS:
        raise ValueError(f"dataset '{spec.label}' asks for inputs '{spec.inputs}', expected one "
                         f"of {INPUTS}.")  # fmt: skip
    if spec.inputs == "frames" and not source.has_frames:
        raise DatasetError(f"dataset '{spec.label}' has no 'frames' field, expected rendered "
                           "frames for inputs 'frames' (synthetic_motion/frames).")  # fmt: skip


def decode_frames(jpegs: Sequence[bytes], image_size: int = 0) -> np.ndarray:
    """JPEG bytes [n] -> [n, H, W, 3] float32 images normalised with ImageNet's mean and std,
    resized bilinearly to image_size x image_size when it is set and differs."""
    from PIL import Image

    from lmr_jax.data.extract import normalize  # imports the backbone: only when frames are read

    images = []
    for data in jpegs:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        if image_size and image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.BILINEAR)
        images.append(np.asarray(image))
    return normalize(np.stack(images))


def window_index(lengths: Sequence[int], window: int, stride: int, tail: bool = True) -> np.ndarray:
    """Start positions of the windows of every video.

    Windows start every `stride` frames. With `tail`, a final window is added so that the last
    frames of each video are covered, and a video shorter than `window` gives one (padded)
    window. Without it the windows are VIBE's (`split_into_chunks`, lib/data_utils/img_utils.py:
    `view_as_windows(indexes, (seqlen,), step=stride)`, videos shorter than T skipped): full
    windows only, the frames after the last one unused.

    Args:
      lengths: frames per video.
      window: T.
      stride: frames between window starts.
      tail: add the tail window (and the padded window of a short video).

    Returns:
      [W, 2] int64 (video index, start frame).
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be positive.")
    rows = []
    for video, length in enumerate(lengths):
        if not tail and int(length) < window:
            continue
        last = max(int(length) - window, 0)
        starts = list(range(0, last + 1, stride))
        if tail and starts[-1] != last:
            starts.append(last)
        rows.extend((video, s) for s in starts)
    return np.asarray(rows, np.int64).reshape(-1, 2)


def cut_window(
    example: dict, start: int, window: int, inputs: str = "features", image_size: int = 0
) -> dict[str, np.ndarray]:
    """Frames [start, start + window) of a video, zero-padded, with a `valid` mask [T].

    With inputs 'frames', `features` holds the window's decoded images (`decode_frames`).
    """
    out = {}
    for field in BATCH_FIELDS:
        if field == "features" and inputs == "frames":
            part = decode_frames(example["frames"][start : start + window], image_size)
        else:
            part = example[field][start : start + window]
        if part.shape[0] < window:
            pad = [(0, window - part.shape[0])] + [(0, 0)] * (part.ndim - 1)
            part = np.pad(part, pad)
        out[field] = part
    valid = np.zeros(window, np.float32)
    valid[: max(0, min(window, example["features"].shape[0] - start))] = 1.0
    out["valid"] = valid
    return out


def _shuffle_seed(seed: int, dataset: int) -> int:
    return int(np.random.SeedSequence([seed, dataset]).generate_state(1)[0])


def _check_batch(global_batch_size, num_local_devices, process_count) -> int:
    per_process, rest = divmod(global_batch_size, process_count)
    if rest or per_process % num_local_devices or per_process == 0:
        raise ValueError(
            f"global_batch_size {global_batch_size} must split evenly over {process_count} "
            f"process(es) x {num_local_devices} local device(s)."
        )
    return per_process


def train_dataset(
    specs: Sequence[DatasetSpec],
    *,
    window: int = 16,
    global_batch_size: int,
    num_local_devices: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    num_threads: int = 1,
    prefetch_buffer_size: int = 64,
    cache_mib: int = 1024,
) -> grain.IterDataset:
    """The infinite, shuffled, mixed training stream of windows, batched for pmap.

    Args:
      specs: the datasets of the mixture (their `weight`, `stride` and `window` apply).
      window: T, for specs that do not set their own (all windows of a batch must agree).
      global_batch_size: windows per step over all processes.
      num_local_devices: the leading axis of every batch.
      seed: the data order; the same seed and specs give the same batches.
      process_index: this process's index (jax.process_index()).
      process_count: the number of processes (jax.process_count()).
      num_threads: threads reading windows ahead of the consumer (1 was fastest on a 2-core
        machine, where cached reads are cheap; raise it on hosts with free cores whose
        datasets do not fit the cache).
      prefetch_buffer_size: windows read ahead.
      cache_mib: decoded videos kept in memory per dataset and process (every window reads
        its whole video; `small` fits entirely, about 70% of `standard`'s train split does).
        Affects speed only, never the batches.

    Returns:
      A grain IterDataset; `iter()` of it is a DatasetIterator with get_state/set_state.

    Raises:
      DatasetError: a dataset is missing, malformed, or its feature size differs from the others'.
      ValueError: the batch does not split over processes and devices, or windows differ.
    """
    if not specs:
        raise ValueError("train_dataset needs at least one DatasetSpec.")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count}).")
    per_process = _check_batch(global_batch_size, num_local_devices, process_count)
    sources = [open_dataset(spec) for spec in specs]
    for spec, source in zip(specs, sources, strict=True):
        _check_inputs(spec, source)
    if len({(spec.inputs, spec.image_size) for spec in specs}) > 1:
        raise ValueError("every dataset of a mixture needs the same inputs and image_size, got "
                         f"{sorted({(s.inputs, s.image_size) for s in specs})}.")  # fmt: skip
    for source in sources:
        source.cache_limit = max(source.cache_limit, cache_mib << 20)
    dims = {s.spec.label: s.feature_dim for s in sources}
    if len(set(dims.values())) > 1:
        raise DatasetError(f"the datasets of a mixture must share a feature size, got {dims}.")
    windows = {spec.window or window for spec in specs}
    if len(windows) > 1:
        raise ValueError(f"every dataset of a mixture needs the same window, got {windows}.")
    parts = []
    for k, (spec, source) in enumerate(zip(specs, sources, strict=True)):
        t = spec.window or window
        index = window_index(source.lengths, t, spec.stride or max(1, t // 2), spec.tail)
        if not len(index):
            raise DatasetError(f"dataset '{spec.label}' has no video of at least {t} "
                               "frames, expected one (without tail windows every window "
                               "is full).")  # fmt: skip
        rows = np.concatenate([np.full((len(index), 1), k), index], axis=1)
        part = grain.MapDataset.source(rows).shuffle(seed=_shuffle_seed(seed, k)).repeat()
        parts.append(part)
    weights = [spec.weight for spec in specs]
    if any(w <= 0 for w in weights):
        raise ValueError(f"mixture weights must be positive, got {weights}.")
    mixed = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, weights)
    mixed = mixed[process_index::process_count]
    t = windows.pop()

    def read_window(row) -> dict[str, np.ndarray]:
        k, video, start = (int(x) for x in row)
        spec = specs[k]
        example = sources[k].read(video, cache=True)
        return cut_window(example, start, t, spec.inputs, spec.image_size)

    def to_devices(batch: dict) -> dict:
        return {
            k: v.reshape(num_local_devices, per_process // num_local_devices, *v.shape[1:])
            for k, v in batch.items()
        }

    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size)
    return (
        mixed.map(read_window)
        .to_iter_dataset(options)
        .batch(per_process, drop_remainder=True)
        .map(to_devices)
    )


def eval_videos(
    spec: DatasetSpec, *, process_index: int = 0, process_count: int = 1
) -> Iterator[dict]:
    """Whole videos of a dataset split, in dataset order.

    Args:
      spec: the dataset split (weight, stride and window are ignored).
      process_index: this process's index; process p reads videos p, p + P, ...
      process_count: the number of processes P.

    Yields:
      Dicts with the schema's arrays of one video ([N, ...]: features, kp2d, kp3d, pose,
      shape, cam, has_smpl, has_kp3d, frame_ids), 'vid_name' (str) and the source file's
      flags `valid` / `valid_i` [N] that the split has (see schema.FILE_FLAGS). With inputs
      'frames', `features` holds the video's decoded images [N, H, W, 3] (`decode_frames`).
    """
    source = open_dataset(spec)
    _check_inputs(spec, source)
    for index in range(process_index, len(source.data_source), process_count):
        example = source.read(index)
        video = {field: np.asarray(example[field]) for field in FIELDS}
        if spec.inputs == "frames":
            video["features"] = decode_frames(example["frames"], spec.image_size)
        video.update({f: np.asarray(example[f]) for f in source.file_flags if f in example})
        name = example["vid_name"]
        video["vid_name"] = name.decode() if isinstance(name, bytes) else str(name)
        yield video
