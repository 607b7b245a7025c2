"""What the service offers: built-in datasets, architectures, methods.

Plain data, no torch: the API validates specs against it and serves it at
GET /v1/catalog. The worker's data loaders must agree with these shapes
(tests/distill/test_data.py pins that).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    input_shape: tuple[int, ...]  # one example, exactly as the dataset gives it
    num_classes: int
    train_size: int  # before the validation split is carved out of it
    test_size: int
    source: str

    def as_dict(self) -> dict:
        return asdict(self)


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        name="digits",
        description="scikit-learn load_digits: 1797 8x8 grey images of handwritten digits, "
        "pixel values 0..16. Test split: a seeded stratified 20%.",
        input_shape=(8, 8),
        num_classes=10,
        train_size=1437,
        test_size=360,
        source="sklearn.datasets.load_digits",
    ),
    "mnist1d": DatasetInfo(
        name="mnist1d",
        description="MNIST-1D (Greydanus 2020), generated locally with the reference "
        "parameters: 40-sample 1-D signals, the standard 4000 train / 1000 test split.",
        input_shape=(40,),
        num_classes=10,
        train_size=4000,
        test_size=1000,
        source="mnist1d.data.make_dataset (get_dataset_args defaults, seed 42)",
    ),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist",
        description="Fashion-MNIST (Xiao et al. 2017): 28x28 grey images of 10 kinds of clothing, "
        "uint8 pixels 0..255, the standard 60,000 train / 10,000 test split. Read from the IDX "
        "files of the Debian package dataset-fashion-mnist (a job naming it is refused when the "
        "server lacks the package).",
        input_shape=(28, 28),
        num_classes=10,
        train_size=60_000,
        test_size=10_000,
        source="Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)",
    ),
}


def entry(model: type[BaseModel]) -> dict[str, Any]:
    """The catalog's entry of a spec class (an architecture or a method): its documentation
    and its parameters' JSON schema, both taken from the class itself."""
    schema = model.model_json_schema()
    params = {k: v for k, v in schema.get("properties", {}).items() if k != "name"}
    return {"description": (model.__doc__ or "").strip() or None, "parameters": params}
