"""Dataset registry: one :class:`DatasetSpec` per supported dataset.

The spec is the single place that says what a dataset looks like once loaded
(input shape, classes, value range), which files of the data directory hold it,
where it officially comes from, which splits exist and how its attribution
baseline is built (METHOD.md §1.2, §6). Everything else in ``lfx_engine.data``
reads these specs instead of hard-coding per-dataset facts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lfx_engine.errors import ParameterError

BundleFormat = Literal["keras_npz", "ucr_tsv", "dsprites_npz"]
BaselineKind = Literal["zeros", "mean_normal_train"]

FETCH_COMMAND = "python -m lfx_engine data fetch"


@dataclass(frozen=True)
class DatasetSpec:
    """Static description of one dataset.

    ``input_shape`` excludes the batch axis: ``(C, H, W)`` for images, ``(140, 1)``
    for ECG beats. ``value_range`` is ``None`` when values are unbounded (the
    z-normalised ECG signal). ``files`` are names inside the data directory.
    ``split_aliases`` maps extra split names onto canonical ones.
    """

    name: str
    title: str
    input_shape: tuple[int, ...]
    n_classes: int
    class_names: tuple[str, ...]
    value_range: tuple[float, float] | None
    files: tuple[str, ...]
    bundle_format: BundleFormat
    source: str
    baseline_kind: BaselineKind
    splits: tuple[str, ...]
    label: str
    split_aliases: tuple[tuple[str, str], ...] = field(default=())

    @property
    def baseline_description(self) -> str:
        """How the attribution baseline ``x̄`` of this dataset is built, in words."""
        if self.baseline_kind == "zeros":
            return f"all-zero (black) input of shape (1, {', '.join(map(str, self.input_shape))})"
        return "mean of all normal training beats (split 'features_train'), shape (1, 140, 1)"

    @property
    def fetch_command(self) -> str:
        """The shell command that downloads this dataset into the data directory."""
        return f"{FETCH_COMMAND} {self.name}"

    def all_split_names(self) -> tuple[str, ...]:
        """Canonical split names followed by their aliases."""
        return self.splits + tuple(alias for alias, _ in self.split_aliases)

    def resolve_split(self, split: str) -> str:
        """Canonical name of ``split`` (aliases resolved); ParameterError if unknown."""
        if split in self.splits:
            return split
        for alias, target in self.split_aliases:
            if alias == split:
                return target
        raise ParameterError(
            f"unknown split {split!r} for dataset {self.name!r}; "
            f"valid splits: {', '.join(self.all_split_names())}"
        )

    def paths(self, folder: Path) -> list[Path]:
        """Absolute paths of this dataset's files inside ``folder``."""
        return [Path(folder) / name for name in self.files]


MNIST_CLASSES = tuple(str(digit) for digit in range(10))
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
# Fine labels of CIFAR-100 in the order of the official ``meta`` file (label index order).
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)

ECG_URLS = (
    "https://www.timeseriesclassification.com/aeon-toolkit/ECG5000.zip",
    "https://www.timeseriesclassification.com/Downloads/ECG5000.zip",
)
DSPRITES_URL = (
    "https://github.com/google-deepmind/dsprites-dataset/raw/master/"
    "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
)

_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise ParameterError(f"dataset {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


register(DatasetSpec(
    name="mnist", title="MNIST", input_shape=(1, 28, 28), n_classes=10, class_names=MNIST_CLASSES,
    value_range=(0.0, 1.0), files=("mnist.npz",), bundle_format="keras_npz",
    source="torchvision.datasets.MNIST (https://ossci-datasets.s3.amazonaws.com/mnist/, Y. LeCun & C. Cortes)",
    baseline_kind="zeros", splits=("train", "test"), label="digit 0-9",
))
register(DatasetSpec(
    name="cifar10", title="CIFAR-10", input_shape=(3, 32, 32), n_classes=10, class_names=CIFAR10_CLASSES,
    value_range=(0.0, 1.0), files=("cifar10.npz",), bundle_format="keras_npz",
    source="torchvision.datasets.CIFAR10 (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz)",
    baseline_kind="zeros", splits=("train", "test"), label="object class",
))
register(DatasetSpec(
    name="cifar100", title="CIFAR-100", input_shape=(3, 32, 32), n_classes=100, class_names=CIFAR100_CLASSES,
    value_range=(0.0, 1.0), files=("cifar100.npz",), bundle_format="keras_npz",
    source="torchvision.datasets.CIFAR100 (https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz)",
    baseline_kind="zeros", splits=("train", "test"), label="fine label (100 classes)",
))
register(DatasetSpec(
    name="ecg5000", title="ECG5000", input_shape=(140, 1), n_classes=2, class_names=("normal", "abnormal"),
    value_range=None, files=("ECG5000_TRAIN.tsv", "ECG5000_TEST.tsv"), bundle_format="ucr_tsv",
    source=f"UCR time series archive ({ECG_URLS[0]})",
    baseline_kind="mean_normal_train",
    splits=("features_train", "features_val", "features_test", "examples_train", "examples_test"),
    label="0 = normal beat (UCR class 1), 1 = abnormal (UCR classes 2-5)",
    split_aliases=(("train", "examples_train"), ("test", "examples_test")),
))
register(DatasetSpec(
    name="dsprites", title="dSprites", input_shape=(1, 64, 64), n_classes=3,
    class_names=("square", "ellipse", "heart"), value_range=(0.0, 1.0), files=("dsprites.npz",),
    bundle_format="dsprites_npz", source=f"DeepMind dSprites ({DSPRITES_URL})",
    baseline_kind="zeros", splits=("train", "test"), label="shape latent (0 square, 1 ellipse, 2 heart)",
))


def list_datasets() -> list[str]:
    """Names of all registered datasets, in registration order."""
    return list(_REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; ParameterError listing valid names if unknown."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ParameterError(
            f"unknown dataset {name!r}; valid names: {', '.join(_REGISTRY)}"
        ) from None
