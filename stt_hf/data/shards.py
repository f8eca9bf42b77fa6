"""Sharded copies of a dataset on disk, as Parquet files or WebDataset tar archives.

`write_shards(dsd, folder, format=...)` writes each split of a `DatasetDict` as `num_shards` files,

    folder/train/train-00000-of-00008.parquet      (or .tar)
    folder/validation/validation-00000-of-00001.parquet
    folder/README.md                                the features (ClassLabel names included) and splits

which `datasets.load_dataset(folder, streaming=True)` reads back as an `IterableDataset` with the same
features (`stt_hf.data.streaming` does). In a WebDataset archive an example is the files
`{key}.{column}.{ext}`: `000042.image.png`, `000042.label.cls` (an integer), `000042.caption.txt`, so
the columns come back as `image.png`, `label.cls`, ... and the streaming loader strips the extension.
Images are written as their stored bytes (a JPEG stays a JPEG).

`stt-hf write-shards DATASET FOLDER` does it for any dataset `stt-hf train`, `train-caption` or
`train-seg` loads, the built-in ones included.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

FORMATS = ("parquet", "webdataset")
SUFFIX = {"parquet": ".parquet", "webdataset": ".tar"}


def shard_name(split: str, index: int, num_shards: int, format: str) -> str:
    return f"{split}-{index:05d}-of-{num_shards:05d}{SUFFIX[format]}"


def write_shards(dsd, folder, *, format: str = "parquet", num_shards: int | dict[str, int] = 8) -> Path:
    """Write every split of `dsd` under `folder` as `num_shards` files (per split when a dict; a split
    never gets more shards than rows); return the folder. An existing non-empty folder is an error."""
    import datasets

    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not empty: choose a new folder for the shards")
    if isinstance(dsd, datasets.Dataset):
        dsd = datasets.DatasetDict({"train": dsd})
    for split, ds in dsd.items():
        wanted = num_shards.get(split, 1) if isinstance(num_shards, dict) else num_shards
        if wanted < 1:
            raise ValueError(f"num_shards must be >= 1, got {wanted} for split {split!r}")
        count = min(wanted, len(ds))
        (folder / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            shard = ds.shard(count, index, contiguous=True)
            path = folder / split / shard_name(split, index, count, format)
            if format == "parquet":
                shard.to_parquet(str(path))
            else:
                write_webdataset_tar(shard, path, first_key=_first_row(len(ds), count, index))
    write_card(folder, dsd, format)
    return folder


def _first_row(num_rows: int, num_shards: int, index: int) -> int:
    """The row of the split where contiguous shard `index` starts (`datasets.Dataset.shard`'s rule)."""
    div, mod = divmod(num_rows, num_shards)
    return div * index + min(index, mod)


def write_webdataset_tar(ds, path: Path, first_key: int = 0) -> None:
    """One tar archive in WebDataset layout: the files of one example share the key `%06d` % row."""

    columns = dict(ds.features)
    with tarfile.open(path, "w") as tar:
        for row, example in enumerate(undecoded(ds)):
            key = f"{first_key + row:06d}"
            for name, feature in columns.items():
                suffix, data = _encode_field(feature, example[name])
                info = tarfile.TarInfo(f"{key}.{name}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def undecoded(ds):
    """`ds` with every image column (images, segmentation masks) read as its stored bytes."""
    import datasets

    for name, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(name, datasets.Image(decode=False))
    return ds


def _encode_field(feature, value) -> tuple[str, bytes]:
    """(WebDataset extension, bytes) of a value: image bytes as stored, class ids `cls`, text `txt`."""
    import datasets

    if isinstance(feature, datasets.Image):
        data = value["bytes"] if value.get("bytes") is not None else Path(value["path"]).read_bytes()
        return _image_suffix(data), data
    if isinstance(feature, datasets.ClassLabel) or (
            isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))):
        return "cls", str(int(value)).encode()
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return "txt", value.encode()
    return "json", json.dumps(value).encode()


def _image_suffix(data: bytes) -> str:
    from PIL import Image

    kind = Image.open(io.BytesIO(data)).format or "PNG"
    return {"JPEG": "jpg"}.get(kind, kind.lower())


def write_card(folder: Path, dsd, format: str) -> None:
    """README.md whose YAML names the split files and the features, so that `load_dataset(folder)`
    recovers ClassLabel names (a WebDataset archive alone only knows integers)."""
    import yaml

    configs = [{"config_name": "default",
                "data_files": [{"split": split, "path": f"{split}/*{SUFFIX[format]}"} for split in dsd]}]
    features = next(iter(dsd.values())).features
    if format == "webdataset":
        import datasets

        # The columns as the WebDataset builder names them: `{column}.{extension}`.
        first = dsd["train"] if "train" in dsd else next(iter(dsd.values()))
        example = undecoded(first)[0]
        features = datasets.Features({f"{name}.{_encode_field(feature, example[name])[0]}": feature
                                      for name, feature in features.items()})
    info = {"features": features._to_yaml_list()} if hasattr(features, "_to_yaml_list") else {}
    header = yaml.safe_dump({"configs": configs, "dataset_info": info}, sort_keys=False)
    rows = ", ".join(f"{split} {len(ds)}" for split, ds in dsd.items())
    (folder / "README.md").write_text(f"---\n{header}---\n\nA sharded copy ({format}) written by "
                                      f"`stt-hf write-shards`: {rows} examples.\n")


def load_source(dataset: str, task: str, seed: int = 0, max_train_samples: int | None = None,
                max_eval_samples: int | None = None):
    """The `DatasetDict` the task's trainer would load for `dataset`."""
    if task == "classification":
        from .classification import load_image_dataset

        return load_image_dataset(dataset, seed=seed, max_train_samples=max_train_samples,
                                  max_eval_samples=max_eval_samples)
    if task == "caption":
        from .captions import load_caption_dataset

        limits = {"train": max_train_samples, "validation": max_eval_samples, "test": max_eval_samples}
        return load_caption_dataset(dataset, seed=seed, limits=limits)
    if task == "segmentation":
        from .segmentation import load_segmentation_dataset

        return load_segmentation_dataset(dataset, seed=seed, max_train_samples=max_train_samples,
                                         max_eval_samples=max_eval_samples)[0]
    raise ValueError(f"task must be classification, caption or segmentation, got {task!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stt-hf write-shards", description=main.__doc__)
    parser.add_argument("dataset", help="a built-in dataset (fashion_mnist, mnist_5k, fashion_scenes, ...), "
                                        "a local folder or a Hub dataset id")
    parser.add_argument("folder", help="where to write the shards (a new or empty folder)")
    parser.add_argument("--format", choices=FORMATS, default="parquet")
    parser.add_argument("--num_shards", type=int, default=8, help="shards of the train split (default 8)")
    parser.add_argument("--eval_shards", type=int, default=1, help="shards of each other split (default 1)")
    parser.add_argument("--task", choices=("classification", "caption", "segmentation"),
                        default="classification", help="which loader reads DATASET")
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the loader's split carving and subsets")
    args = parser.parse_args(argv)
    for flag in ("num_shards", "eval_shards", "max_train_samples", "max_eval_samples"):  # before any loading
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be a positive integer, got {getattr(args, flag)}")
    return args


def main(argv: list[str] | None = None) -> Path:
    """`stt-hf write-shards DATASET FOLDER`: a sharded copy of a dataset for `stt-hf train --streaming`."""
    args = parse_args(argv)
    dsd = load_source(args.dataset, args.task, args.seed, args.max_train_samples, args.max_eval_samples)
    shards = {split: args.num_shards if split == "train" else args.eval_shards for split in dsd}
    folder = write_shards(dsd, args.folder, format=args.format, num_shards=shards)
    sizes = ", ".join(f"{split}: {len(ds)} rows in {min(shards[split], len(ds))} shard(s)"
                      for split, ds in dsd.items())
    print(f"wrote {folder} ({args.format}; {sizes})")
    return folder


__all__ = ["FORMATS", "load_source", "main", "parse_args", "shard_name", "write_card", "write_shards",
           "write_webdataset_tar"]

if __name__ == "__main__":
    main()
