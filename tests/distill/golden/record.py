"""Record the golden outcomes: run once on the code whose figures are the reference.

    PYTHONPATH=$PWD python -m tests.distill.golden.record MACHINE [--onnx]

MACHINE: the folder of this kind of machine (cases.py says which exist and why there are several).

--onnx also (re)makes teacher.onnx (a scikit-learn MLP on digits' 64 pixels) and its
inspection; normally they stay as committed.
"""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from pathlib import Path

from tests.distill.golden.cases import CASES, HERE, outcome, recorded_path


def make_onnx_teacher(data_cache: Path) -> None:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from app.contract.onnx_classifier import OnnxClassifier
    from app.contract.spec import DatasetSpec
    from worker.distill.data import load_dataset

    digits = load_dataset(DatasetSpec(name="digits"), data_cache)
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(digits.train.x.reshape(len(digits.train.x), -1), digits.train.y)
    onx = convert_sklearn(
        clf, initial_types=[("x", FloatTensorType([None, 64]))], options={id(clf): {"zipmap": False}}, target_opset=17
    )
    (HERE / "teacher.onnx").write_bytes(onx.SerializeToString())
    inspection = OnnxClassifier(HERE / "teacher.onnx").describe()
    (HERE / "teacher.inspection.json").write_text(json.dumps(inspection, indent=1, sort_keys=True) + "\n")


def main() -> None:
    machine = sys.argv[1]
    (HERE / machine).mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "data"
        if "--onnx" in sys.argv:
            make_onnx_teacher(cache)
        for case in CASES:
            shown = outcome(case, Path(tmp) / case.name, cache)
            recorded_path(case, machine).write_text(json.dumps(shown, indent=1, sort_keys=True) + "\n")
            print(f"recorded {case.name}")


if __name__ == "__main__":
    main()
