"""Built-in datasets that come from a system package, and whether this machine has them.

Torch-free: the API refuses a job naming a packaged dataset that is not installed (422 naming
the package) before any worker sees it; the worker reads the files (worker/distill/idx.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedDataset:
    package: str  # the Debian package that ships the files
    folder: Path  # where it installs them
    files: dict[str, str]  # role (x_train, y_train, x_test, y_test) -> file name
    env: str  # an environment variable that points elsewhere (a copy outside the package)

    def location(self) -> Path:
        return Path(os.environ.get(self.env) or self.folder)

    def missing(self) -> list[str]:
        """Files that are not there; empty when the dataset can be loaded."""
        where = self.location()
        return [name for name in self.files.values() if not (where / name).is_file()]

    def install_hint(self) -> str:
        return (
            f"the built-in dataset needs the system package {self.package!r}, which is not "
            f"installed on this server: its administrator installs it with `apt-get install "
            f"{self.package}` (scripts/setup.sh does it), or sets {self.env} to a folder holding "
            "its IDX files."
        )


PACKAGED: dict[str, PackagedDataset] = {
    "fashion_mnist": PackagedDataset(
        package="dataset-fashion-mnist",
        folder=Path("/usr/share/datasets/fashion-mnist"),
        files={
            "x_train": "train-images-idx3-ubyte.gz",
            "y_train": "train-labels-idx1-ubyte.gz",
            "x_test": "t10k-images-idx3-ubyte.gz",
            "y_test": "t10k-labels-idx1-ubyte.gz",
        },
        env="DISTILL_FASHION_MNIST_DIR",
    ),
}
