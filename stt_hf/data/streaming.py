"""Training data read as a stream: a Hub dataset id, a folder of Parquet shards or of WebDataset tar
shards (`stt_hf.data.shards` writes both) opened as a `datasets.IterableDataset`.

What a training process reads:

    source shards ──split_dataset_by_node──► this rank's shards ──shuffle(seed + pass, buffer)──►
        DataLoader worker w takes every W-th shard ──► skip what a resumed run already trained on ──►
        decode + transform ──► batches

`TrainingStream` is endless: after a pass over its shards a worker starts the next pass, reshuffled.
So every worker yields full batches, the DataLoader takes them round-robin (worker 0, 1, ..., W-1, 0,
...), and the position after `n` batches is known without any saved iterator state: worker `w` has
yielded `ceil((n - w) / W)` batches. A run resumed from the checkpoint of step `s` skips that many
examples per worker (`n = s * gradient_accumulation_steps`), reading them without decoding them.

The guarantee: a resumed run trains on exactly the batches that the uninterrupted run would have, in
the same order (`StreamLoader` restores the round-robin order), when the data, seed, shuffle buffer,
world size, per-device batch, gradient accumulation and worker count are the same
(`stt_hf.tasks.streaming` checks them against the checkpoint). Nothing is repeated and nothing is
skipped. Random augmentation draws differ. The cost: a resumed worker reads (without decoding) every
row it had read before, earlier passes included.

Evaluation splits are materialised (`materialise_split`): streamed once into an Arrow table.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

EVAL_SPLITS = ("validation", "test")
# WebDataset archives name a column after its file extension: `image.png`, `label.cls`.
WEBDATASET_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".cls", ".txt", ".json")


def open_stream(name_or_path: str, split: str = "train"):
    """The split of a Hub dataset id or a local folder of shards as a `datasets.IterableDataset`,
    columns as written (WebDataset extensions stripped: `image.png` → `image`), images undecoded."""
    import datasets

    from .classification import BUILTIN_DATASETS

    if name_or_path in BUILTIN_DATASETS:
        raise ValueError(f"--dataset {name_or_path} is built in and held in memory, not streamed: write a "
                         f"sharded copy first (stt-hf write-shards {name_or_path} FOLDER) and stream FOLDER")
    path = Path(name_or_path)
    if not path.is_dir() and (name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1):
        raise FileNotFoundError(f"--dataset {name_or_path}: no such folder (a Hub dataset id has the form "
                                "ORG/NAME)")
    streams = datasets.load_dataset(str(name_or_path), streaming=True)
    if split not in streams:
        raise ValueError(f"{name_or_path} has no {split!r} split; its splits are: {', '.join(streams)}")
    stream = undecoded(streams[split])
    renames = {c: c.rsplit(".", 1)[0] for c in stream.column_names if c.endswith(WEBDATASET_SUFFIXES)}
    return stream.rename_columns(renames) if renames else stream


def undecoded(stream):
    """Image columns as raw {"bytes", "path"}: renaming, shuffling and skipping then never decode (and
    renaming a decoded column would re-encode its images)."""
    import datasets

    for name, feature in stream.features.items():
        if isinstance(feature, datasets.Image) and feature.decode:
            stream = stream.cast_column(name, datasets.Image(decode=False))
    return stream


def select_columns(stream, image_column: str, target_column: str, target: str):
    """Keep `image_column` and `target_column` of an `open_stream` stream, renamed `image` and `target`."""
    import datasets

    for column in (image_column, target_column):
        if column not in stream.column_names:
            raise ValueError(f"the stream has no column {column!r}; its columns are: "
                             f"{', '.join(stream.column_names)}")
    stream = stream.select_columns([image_column, target_column])
    renames = {s: t for s, t in ((image_column, "image"), (target_column, target)) if s != t}
    stream = stream.rename_columns(renames) if renames else stream
    if not isinstance(stream.features["image"], datasets.Image):
        raise ValueError(f"column {image_column!r} must be a datasets.Image feature, got "
                         f"{stream.features['image']!r}")
    return stream


def class_names(stream, eval_split) -> list[str]:
    """The ClassLabel names of the stream, else the class ids seen in the materialised eval split."""
    import datasets

    feature = stream.features["label"]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    if isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
        return [str(i) for i in range(max(eval_split["label"]) + 1)]
    raise ValueError(f"streamed labels must be class ids (a ClassLabel or integers), got {feature!r}")


def materialise_split(stream, max_samples: int | None = None):
    """The first `max_samples` (or all) examples of a stream as an in-memory `datasets.Dataset`."""
    import datasets

    rows = list(stream.take(max_samples) if max_samples else stream)
    if not rows:
        raise ValueError("the evaluation split is empty")
    return datasets.Dataset.from_list(rows, features=stream.features)


def node_shard(stream, rank: int, world_size: int):
    """This process's part of the stream (`datasets.distributed.split_dataset_by_node`): whole shards
    when their number divides by `world_size`, else every `world_size`-th example of all shards."""
    from datasets.distributed import split_dataset_by_node

    if world_size == 1:
        return stream
    if stream.num_shards % world_size:
        logger.warning("%d shards do not divide among %d processes: each reads every shard and keeps "
                       "every %d-th example (write a multiple of %d shards to read only its own)",
                       stream.num_shards, world_size, world_size, world_size)
    return split_dataset_by_node(stream, rank=rank, world_size=world_size)


def workers_for(stream, requested: int) -> int:
    """DataLoader workers that share this process's shards evenly: the most, up to `requested`, that
    divide the shard count (a worker with fewer shards would start its next pass early and see its
    examples more often)."""
    workers = max((w for w in range(1, min(requested, stream.num_shards) + 1) if stream.num_shards % w == 0),
                  default=0)
    if workers != requested:
        logger.warning("%d dataloader workers asked for, %d shard(s) to read: using %d", requested,
                       stream.num_shards, workers)
    return workers


def batches_from_worker(consumed_batches: int, worker: int, num_workers: int) -> int:
    """How many of the first `consumed_batches` batches worker `worker` made (round-robin order)."""
    if num_workers <= 1:
        return consumed_batches
    return max(0, -(-(consumed_batches - worker) // num_workers))


class TrainingStream(torch.utils.data.IterableDataset):
    """One process's endless training stream: pass after pass over its shards, reshuffled each pass
    (`seed + pass`), the first `skip_batches` batches of a resumed run skipped without decoding.

    `transform(example) -> item` turns a raw example (`image` as {"bytes", "path"}) into what the
    collator takes; it runs in the DataLoader workers.
    """

    def __init__(self, source, transform, *, batch_size: int, seed: int, shuffle_buffer: int,
                 skip_batches: int = 0):
        super().__init__()
        self.source, self.transform = source, transform
        self.batch_size, self.seed, self.shuffle_buffer = batch_size, seed, shuffle_buffer
        self.skip_batches = skip_batches

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        skip = self.batch_size * batches_from_worker(self.skip_batches, worker, num_workers)
        # Each worker iterates the datasets stream itself, which gives it every W-th shard.
        source = self.source.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer) \
            if self.shuffle_buffer > 1 else self.source
        for pass_index in itertools.count():
            source.set_epoch(pass_index)
            seen = 0
            for example in source:
                seen += 1
                if skip:
                    skip -= 1
                    continue
                yield self.transform(example)
            if not seen:  # a worker without shards, or an empty stream
                return


class StreamLoader(torch.utils.data.DataLoader):
    """A DataLoader over a `TrainingStream` that hands out a resumed run's batches in the order of the
    uninterrupted run.

    A fresh DataLoader asks worker 0 first, but after `n` batches the next one belongs to worker
    `n % W`: the batches of the first rounds arrive rotated, and are put back in order here (at most
    `W` batches held).
    """

    def __iter__(self):
        batches = super().__iter__()
        skipped, workers = self.dataset.skip_batches, max(1, self.num_workers)
        if not skipped or workers == 1:
            yield from batches
            return
        done = [batches_from_worker(skipped, w, workers) for w in range(workers)]
        held, wanted = {}, skipped
        for arrival, batch in enumerate(batches):
            worker, round_ = arrival % workers, arrival // workers
            held[(done[worker] + round_) * workers + worker] = batch  # its index in the uninterrupted run
            while wanted in held:
                yield held.pop(wanted)
                wanted += 1


def decode_image(value):
    """A PIL image from a raw `datasets.Image` value ({"bytes", "path"}), read the way datasets reads it."""
    import datasets

    return datasets.Image().decode_example(value)


__all__ = ["EVAL_SPLITS", "StreamLoader", "TrainingStream", "batches_from_worker", "class_names",
           "decode_image", "materialise_split", "node_shard", "open_stream", "select_columns", "undecoded",
           "workers_for"]
