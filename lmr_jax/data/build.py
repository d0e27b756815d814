"""Builds a dataset of tfds_builders into a data directory, without TensorFlow.

    python -m lmr_jax.data.build synthetic_motion/small --data_dir=data
    python -m lmr_jax.data.build synthetic_motion/standard --data_dir=data
    python -m lmr_jax.data.build NAME/CONFIG --data_dir=data --manual_dir=DIR  # user files

The builder of NAME is `tfds_builders.NAME.Builder`; datasets are written as array_record.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import tempfile
import time

BUILD_COMMAND = "python -m lmr_jax.data.build {name} --data_dir={data_dir}"


class _SpillingShuffler:
    """TFDS 4.9's `shuffle.Shuffler` with the examples kept in one local temporary file.

    TFDS keeps a split in memory up to 1 GB, then spills it to 1000 bucket files through
    `tf.io.gfile` (TensorFlow). This one appends every serialized example to an unnamed
    temporary file beside the output and keeps only (key, offset, length) per example in
    memory; the writer then reads the examples back one at a time in key order. Peak memory is
    about one example (plus about 150 bytes per example), whatever the split's size. Same
    interface and ordering as TFDS's: hashed keys (a fixed pseudo-random order) or, with
    `disable_shuffling`, the integer keys themselves.
    """

    def __init__(self, dirpath, hash_salt, disable_shuffling=False, ignore_duplicates=False):
        from tensorflow_datasets.core import hashing

        self._hasher = hashing.Hasher(hash_salt)
        self._disable_shuffling = disable_shuffling
        self._ignore_duplicates = ignore_duplicates
        folder = os.fspath(dirpath)
        self._file = tempfile.TemporaryFile(dir=folder if os.path.isdir(folder) else None)
        self._index: list[tuple[int, int, int]] = []
        self._seen: set[int] = set()
        self._total_bytes = 0
        self._read_only = False

    @property
    def size(self) -> int:
        return self._total_bytes

    @property
    def bucket_lengths(self) -> list[int]:
        return [len(self._index)]

    @property
    def num_examples(self) -> int:
        return len(self._index)

    def add(self, key, data: bytes) -> None:
        if self._read_only:
            raise AssertionError("add() cannot be called after __iter__.")
        hkey = self._hasher.hash_key(key)
        if self._ignore_duplicates:
            if hkey in self._seen:
                return
            self._seen.add(hkey)
        if self._disable_shuffling:
            hkey = int(key)  # the order of the keys is the order of the examples
        self._index.append((hkey, self._total_bytes, len(data)))
        self._file.write(data)
        self._total_bytes += len(data)

    def __iter__(self):
        from tensorflow_datasets.core import shuffle

        self._read_only = True
        self._file.flush()
        previous_key, previous_data = None, None
        for hkey, offset, length in sorted(self._index):
            self._file.seek(offset)
            data = self._file.read(length)
            if hkey == previous_key:
                raise shuffle.DuplicatedKeysError(data, previous_data)
            previous_key, previous_data = hkey, data
            yield hkey, data
        self._file.close()


@contextlib.contextmanager
def tensorflow_free_writing():
    """Makes TFDS 4.9's writer work without TensorFlow, in bounded memory, fast to read back.

    Builders wrap their `_download_and_prepare` in it. Inside:
    * array_record files are written uncompressed: TFDS's default (brotli) saves ~20% on our
      examples, whose features are incompressible floats, but makes every random read of a
      video ~3.5x slower;
    * a split is staged in a local temporary file (`_SpillingShuffler`) instead of TFDS's
      memory buffer and `tf.io.gfile` buckets, so peak memory does not grow with the split
      (measured in experiments/benchmarks/builder_memory.py).
    """
    from array_record.python import array_record_module
    from tensorflow_datasets.core import file_adapters, shuffle

    class UncompressedArrayRecord(file_adapters.ArrayRecordFileAdapter):
        @classmethod
        def write_examples(cls, path, iterator):
            writer = array_record_module.ArrayRecordWriter(
                os.fspath(path), "group_size:1,uncompressed"
            )
            for _, serialized_example in iterator:
                writer.write(serialized_example)
            writer.close()

    table, fmt = file_adapters.ADAPTER_FOR_FORMAT, file_adapters.FileFormat.ARRAY_RECORD
    saved = table[fmt], shuffle.Shuffler
    table[fmt], shuffle.Shuffler = UncompressedArrayRecord, _SpillingShuffler
    try:
        yield
    finally:
        table[fmt], shuffle.Shuffler = saved


def builder_class(name: str):
    """The TFDS builder class of a dataset name ('synthetic_motion' or 'synthetic_motion/small').

    Raises:
      ValueError: no tfds_builders package has that name.
    """
    dataset = name.split("/")[0].split(":")[0]
    try:
        module = importlib.import_module(f"tfds_builders.{dataset}")
    except ModuleNotFoundError as e:
        if e.name not in (f"tfds_builders.{dataset}", "tfds_builders"):
            raise
        raise ValueError(
            f"unknown dataset '{dataset}': there is no tfds_builders/{dataset} builder."
        ) from None
    return module.Builder


def build(
    name: str,
    data_dir: str,
    *,
    manual_dir: str | None = None,
    overwrite: bool = False,
    **builder_kwargs,
):
    """Builds `name` ('dataset/config') into `data_dir` as array_record.

    Args:
      name: dataset and config, e.g. 'synthetic_motion/small'.
      data_dir: the TFDS data directory to write into.
      manual_dir: where a builder with MANUAL_DOWNLOAD_INSTRUCTIONS finds the user's files.
      overwrite: rebuild even if the dataset is already there.
      **builder_kwargs: passed to the builder (e.g. smpl_path for synthetic_motion).

    Returns:
      The builder (its `info` describes what was written).
    """
    import tensorflow_datasets as tfds

    dataset, _, config = name.partition("/")
    cls = builder_class(dataset)
    kwargs = dict(data_dir=os.path.expanduser(data_dir), file_format="array_record")
    if config:
        known = [c.name for c in cls.BUILDER_CONFIGS]
        if config not in known:
            raise ValueError(f"unknown config '{config}' of {dataset}, expected one of {known}.")
        kwargs["config"] = config
    builder = cls(**kwargs, **builder_kwargs)
    mode = tfds.download.GenerateMode
    download_config = tfds.download.DownloadConfig(
        manual_dir=manual_dir,
        download_mode=mode.REUSE_CACHE_IF_EXISTS if overwrite else mode.REUSE_DATASET_IF_EXISTS,
    )
    builder.download_and_prepare(download_config=download_config)
    return builder


def _dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="dataset/config, e.g. synthetic_motion/small")
    parser.add_argument("--data_dir", required=True, help="TFDS data directory to write into")
    parser.add_argument("--manual_dir", default=None, help="user files, if the builder needs them")
    parser.add_argument("--smpl_path", default=None, help="SMPL file (synthetic_motion only)")
    parser.add_argument("--overwrite", action="store_true", help="rebuild an existing dataset")
    args = parser.parse_args(argv)
    extra = {"smpl_path": args.smpl_path} if args.smpl_path else {}
    start = time.perf_counter()
    try:
        builder = build(args.name, args.data_dir, manual_dir=args.manual_dir,
                        overwrite=args.overwrite, **extra)  # fmt: skip
    except ValueError as e:  # our errors are one sentence; no traceback wall
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = str(builder.data_dir)
    splits = ", ".join(f"{k} {v.num_examples}" for k, v in builder.info.splits.items())
    print(f"{args.name}: {splits} videos in {path} "
          f"({_dir_size(path) / 2**20:.1f} MiB, {time.perf_counter() - start:.1f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
