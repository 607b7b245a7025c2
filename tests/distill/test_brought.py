"""Bring your own teacher and data: ONNX and safetensors teachers, uploaded NPZ datasets,
mixed ensembles, run through the engine in process."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch

from app.contract.architectures import CNNArch, MLPArch
from app.contract.spec import DatasetSpec
from tests.support.engine import run_tiny_job
from tests.support.specs import CNN, MLP, tiny_spec
from worker.distill import cache
from worker.distill.data import load_uploaded
from worker.distill.inference import predict_logits
from worker.distill.inputs import BroughtTeacher, JobInputs
from worker.distill.metrics import accuracy, state_bytes
from worker.distill.models import build_model, count_parameters
from worker.distill.reporting import MemoryReporter
from worker.distill.teachers import EnsembleTeacher, OnnxTeacher, load_weights_teacher

ONNX_ID, CNN_ID, MLP_ID, DATA_ID = "onnx-teacher", "cnn-weights", "mlp-weights", "digits-upload"


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


@pytest.fixture(scope="module")
def sk_teacher(tmp_path_factory, digits):
    """A scikit-learn MLP trained on digits' 64 flattened pixels, as ONNX giving probabilities."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from app.contract.onnx_classifier import OnnxClassifier

    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(_flat(digits.train.x), digits.train.y)
    onx = convert_sklearn(
        clf, initial_types=[("x", FloatTensorType([None, 64]))], options={id(clf): {"zipmap": False}}, target_opset=17
    )
    path = tmp_path_factory.mktemp("onnx") / "teacher.onnx"
    path.write_bytes(onx.SerializeToString())
    inspection = OnnxClassifier(path).describe()
    return clf, BroughtTeacher(path, "onnx", inspection)


def _train_ours(arch, digits, seed=0):
    from app.contract.spec import TeacherTrain
    from worker.distill.data import input_stats
    from worker.distill.objectives import CE
    from worker.distill.trainer import train

    model = build_model(arch, digits.input_shape, digits.num_classes, *input_stats(digits.train.x), seed=seed)
    optim = TeacherTrain(arch=arch.model_dump(), epochs=3, batch_size=64)
    train(
        model,
        CE(),
        digits.train,
        digits.val,
        optim,
        seed=seed,
        device=torch.device("cpu"),
        reporter=MemoryReporter(checkpoint_dir=None),
        phase="teacher",
        run="teacher",
    )
    return model.eval()


@pytest.fixture(scope="module")
def weights_teachers(tmp_path_factory, digits):
    """Our CNN and MLP, trained briefly, saved as safetensors: {id: (model, BroughtTeacher)}."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("weights")
    out = {}
    for id_, arch in ((CNN_ID, CNNArch(**CNN)), (MLP_ID, MLPArch(**MLP))):
        model = _train_ours(arch, digits)
        path = folder / f"{id_}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        out[id_] = (model, BroughtTeacher(path, "safetensors", {}))
    return out


# --- the ONNX teacher as a module ------------------------------------------------------------


def test_onnx_teacher_is_a_frozen_module_without_parameters(sk_teacher, digits):
    clf, brought = sk_teacher
    t = OnnxTeacher(brought.path, input_shape=(8, 8), num_classes=10)
    assert list(t.parameters()) == [] and t.input_shape == (8, 8) and t.num_classes == 10
    assert t.output == "probabilities" and t.output_kind == "probabilities" and t.log_probabilities
    t = t.to("cpu").float().eval().requires_grad_(False)
    n_weights = sum(c.size for c in clf.coefs_ + clf.intercepts_)
    assert count_parameters(t) == n_weights and state_bytes(t) >= 4 * n_weights
    x = torch.as_tensor(digits.test.x[:7])  # (7, 8, 8): the model takes 64 flat features
    out = t(x)
    assert out.dtype == torch.float32 and out.shape == (7, 10) and out.device == x.device
    want = np.log(np.clip(clf.predict_proba(_flat(digits.test.x[:7])), 1e-12, None))
    assert np.allclose(out.numpy(), want, atol=1e-5)
    for other in (copy.deepcopy(t), pickle.loads(pickle.dumps(t))):
        assert torch.equal(other(x), out)
    # predict_logits (cached soft targets, metrics) on a module without parameters: the CPU
    assert torch.equal(predict_logits(t, digits.test.x[:7]), out)
    with pytest.raises(ValueError, match="11"):
        OnnxTeacher(brought.path, num_classes=11)


def test_ensemble_member_may_be_onnx(sk_teacher, digits):
    clf, brought = sk_teacher
    ours = build_model(MLPArch(hidden=[8]), (8, 8), 10, seed=0).eval()
    x = torch.as_tensor(digits.test.x[:5])
    got = EnsembleTeacher([ours, OnnxTeacher(brought.path, input_shape=(8, 8))])(x).detach().numpy()
    p = clf.predict_proba(_flat(digits.test.x[:5]))
    want = np.log((torch.softmax(ours(x), 1).detach().numpy() + p) / 2)
    assert np.allclose(got, want, atol=1e-5)


# --- jobs with brought teachers --------------------------------------------------------------


def test_onnx_teacher_job(sk_teacher, digits, tmp_path, data_cache, monkeypatch):
    from sklearn.metrics import accuracy_score

    clf, brought = sk_teacher
    calls = []

    def recording(model, x, **kw):
        out = predict_logits(model, x, **kw)
        calls.append((np.asarray(x).copy(), out.clone()))
        return out

    monkeypatch.setattr(cache, "predict_logits", recording)  # the cached soft targets are computed there
    spec = tiny_spec(teacher={"artifact": {"id": ONNX_ID}}, seeds=[0])
    result, reporter = run_tiny_job(spec, tmp_path, data_cache, JobInputs(teachers={ONNX_ID: brought}))
    r = result.report

    # not trained: no teacher run, no checkpoint, and an event says what was loaded
    assert {p for p, *_ in reporter.metrics} == {"student", "baseline"}
    assert not list((tmp_path / "ck").glob("teacher*"))
    loaded = [m for _, m in reporter.events if m.startswith(f"teacher: brought teacher {ONNX_ID}")]
    assert len(loaded) == 1 and "'probabilities'" in loaded[0] and "log-probabilities" in loaded[0]
    assert reporter.progresses[0] == 0.0 and reporter.progresses[-1] == 1.0

    t = r["teacher"]
    assert (t["source"], t["artifact"], t["format"], t["arch"]) == ("artifact", ONNX_ID, "onnx", None)
    assert (t["output"], t["output_kind"]) == ("probabilities", "probabilities")
    assert t["test_accuracy"] == accuracy_score(digits.test.y, clf.predict(_flat(digits.test.x)))
    assert t["parameters"] == sum(c.size for c in clf.coefs_ + clf.intercepts_)
    assert r["summary"]["compression"] == pytest.approx(t["parameters"] / r["student"]["mean"]["parameters"])

    # cached soft targets: one onnxruntime pass over the training set, = log(predict_proba)
    assert r["soft_targets"] == "cached"
    train_calls = [out for x, out in calls if x.shape == digits.train.x.shape and np.array_equal(x, digits.train.x)]
    assert len(train_calls) == 1
    want = np.log(np.clip(clf.predict_proba(_flat(digits.train.x)), 1e-12, None))
    assert np.allclose(train_calls[0].numpy(), want, atol=1e-5, rtol=0)
    assert r["student"]["runs"][0]["test_accuracy"] > 0.2  # chance is 0.1


def test_onnx_teacher_runs_per_batch_under_augmentation(sk_teacher, digits, tmp_path, data_cache, monkeypatch):
    _, brought = sk_teacher
    batches = []
    forward = OnnxTeacher.forward

    def counting(self, x):
        batches.append(len(x))
        return forward(self, x)

    monkeypatch.setattr(OnnxTeacher, "forward", counting)
    spec = tiny_spec(
        teacher={"artifact": {"id": ONNX_ID, "output_kind": "probabilities"}},
        seeds=[0],
        baseline=False,
        method={"name": "dkd"},
        training={"epochs": 1, "batch_size": 64, "augment": {"noise_std": 0.5}},
    )
    result, _reporter = run_tiny_job(spec, tmp_path, data_cache, JobInputs(teachers={ONNX_ID: brought}))
    assert result.report["soft_targets"] == "recomputed"
    # one onnxruntime call per training batch of the one epoch (then the evaluation's)
    assert batches[: -(-len(digits.train) // 64)] == [64] * (len(digits.train) // 64) + [len(digits.train) % 64]
    assert 0 <= result.report["student"]["runs"][0]["test_agreement"] <= 1


def test_safetensors_teacher_job(weights_teachers, digits, tmp_path, data_cache):
    model, brought = weights_teachers[CNN_ID]
    spec = tiny_spec(
        teacher={"artifact": {"id": CNN_ID, "arch": CNN}},
        seeds=[0],
        baseline=False,
        training={"epochs": 2, "batch_size": 64},
    )
    result, reporter = run_tiny_job(spec, tmp_path, data_cache, JobInputs(teachers={CNN_ID: brought}))
    t = result.report["teacher"]
    assert (t["source"], t["artifact"], t["format"], t["arch"]["name"]) == ("artifact", CNN_ID, "safetensors", "cnn")
    assert t["test_accuracy"] == accuracy(predict_logits(model, digits.test.x), digits.test.y)
    assert t["parameters"] == count_parameters(model) and t["bytes"] == state_bytes(model)
    assert "epochs_run" not in t and {p for p, *_ in reporter.metrics} == {"student"}
    loaded = load_weights_teacher(brought.path, CNNArch(**CNN), (8, 8), 10)
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training


def test_safetensors_teacher_with_born_again_and_fitnet(weights_teachers, tmp_path, data_cache):
    inputs = JobInputs(teachers={k: b for k, (_, b) in weights_teachers.items()})
    born = tiny_spec(
        teacher={"artifact": {"id": MLP_ID, "arch": MLP}},
        seeds=[0],
        baseline=False,
        method={"name": "born_again", "generations": 2},
        training={"epochs": 1, "batch_size": 64},
    )
    fitnet = tiny_spec(
        teacher={"artifact": {"id": CNN_ID, "arch": CNN}},
        seeds=[0],
        baseline=False,
        method={"name": "fitnet"},
        training={"epochs": 1, "batch_size": 64},
    )
    r, reporter = run_tiny_job(born, tmp_path / "born", data_cache, inputs)
    assert [g["generation"] for g in r.report["generations"]] == [1, 2]
    assert r.report["teacher"]["artifact"] == MLP_ID
    assert [run for p, run, *_ in reporter.metrics if p == "generation"] == ["gen=1 seed=0", "gen=2 seed=0"]
    r, reporter = run_tiny_job(fitnet, tmp_path / "fitnet", data_cache, inputs)
    assert r.report["soft_targets"] == "recomputed" and r.report["teacher"]["arch"]["name"] == "cnn"
    assert r.report["student"]["runs"][0]["test_accuracy"] > 0


def test_mixed_ensemble_trains_only_its_trained_member(sk_teacher, digits, tmp_path, data_cache):
    clf, brought = sk_teacher
    spec = tiny_spec(
        teacher={"ensemble": [{"arch": MLP, "epochs": 2, "seed": 1}, {"id": ONNX_ID}]},
        seeds=[0],
        baseline=False,
        training={"epochs": 1, "batch_size": 64},
    )
    result, reporter = run_tiny_job(spec, tmp_path, data_cache, JobInputs(teachers={ONNX_ID: brought}))
    assert sorted({(p, run) for p, run, *_ in reporter.metrics if p == "teacher"}) == [("teacher", "member=1")]
    t = result.report["teacher"]
    trained, onnx = t["members"]
    assert (trained["member"], trained["source"], trained["arch"]["name"]) == (1, "trained", "mlp")
    assert trained["epochs_run"] == 2
    assert (onnx["member"], onnx["source"], onnx["artifact"], onnx["format"]) == (2, "artifact", ONNX_ID, "onnx")
    assert onnx["test_accuracy"] == float(np.mean(clf.predict(_flat(digits.test.x)) == digits.test.y))
    assert t["parameters"] == trained["parameters"] + onnx["parameters"]
    assert any(m.startswith(f"teacher member=2: brought teacher {ONNX_ID}") for _, m in reporter.events)


def test_missing_brought_file_fails_clearly(tmp_path, data_cache):
    spec = tiny_spec(teacher={"artifact": {"id": ONNX_ID}}, seeds=[0])
    with pytest.raises(ValueError, match=ONNX_ID):
        run_tiny_job(spec, tmp_path, data_cache)


# --- uploaded datasets -----------------------------------------------------------------------


def _digits_npz(path, *, unlabeled=300, test=True):
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.images.astype(np.float32), d.target.astype(np.int64)
    arrays = {"x": x[:1200], "y": y[:1200]}
    if unlabeled:
        arrays["x_unlabeled"] = x[1200 : 1200 + unlabeled]
    if test:
        arrays["x_test"], arrays["y_test"] = x[1500:], y[1500:]
    np.savez(path, **arrays)
    return arrays


def test_load_uploaded_with_and_without_a_test_split(tmp_path):
    arrays = _digits_npz(tmp_path / "a.npz")
    s = load_uploaded(tmp_path / "a.npz", DatasetSpec(artifact=DATA_ID))
    assert np.array_equal(s.test.x, arrays["x_test"]) and np.array_equal(s.test.y, arrays["y_test"])
    assert len(s.train) + len(s.val) == 1200 and len(s.val) == 120
    assert s.input_shape == (8, 8) and s.num_classes == 10
    assert s.train.x.dtype == np.float32 and s.train.y.dtype == np.int64

    arrays = _digits_npz(tmp_path / "b.npz", unlabeled=0, test=False)
    spec = DatasetSpec(artifact=DATA_ID, test_fraction=0.25, split_seed=3)
    s = load_uploaded(tmp_path / "b.npz", spec)
    assert len(s.test) == 300 and len(s.train) + len(s.val) == 900
    rows = {r.tobytes() for part in (s.train, s.val, s.test) for r in part.x}
    assert len(rows) == len({r.tobytes() for r in arrays["x"]})  # disjoint, nothing lost
    # stratified: each class's share of the test split is its share of the upload (+- 1 row)
    counts, test_counts = np.bincount(arrays["y"]), np.bincount(s.test.y)
    assert np.all(np.abs(test_counts - counts * 0.25) <= 1)
    again = load_uploaded(tmp_path / "b.npz", spec)
    assert np.array_equal(again.test.x, s.test.x) and np.array_equal(again.train.x, s.train.x)
    # a class present only in the test split still counts
    np.savez(
        tmp_path / "c.npz",
        x=arrays["x"][:50],
        y=np.zeros(50, np.int64) + (arrays["y"][:50] % 3),
        x_test=arrays["x"][:5],
        y_test=np.array([0, 1, 2, 3, 4]),
    )
    assert load_uploaded(tmp_path / "c.npz", DatasetSpec(artifact=DATA_ID)).num_classes == 5


def test_uploaded_dataset_with_unlabeled_transfer_set(tmp_path, data_cache):
    from worker.distill.export import load_safetensors

    arrays = _digits_npz(tmp_path / "upload.npz")
    spec = tiny_spec(
        dataset={"artifact": DATA_ID, "transfer": {"unlabeled": True}},
        seeds=[0],
        training={"epochs": 2, "batch_size": 64},
    )
    result, reporter = run_tiny_job(spec, tmp_path, data_cache, JobInputs(dataset_npz=tmp_path / "upload.npz"))
    d = result.report["dataset"]
    assert (d["name"], d["artifact"]) == (f"artifact {DATA_ID}", DATA_ID)
    assert d["transfer_size"] == 300 and d["test_size"] == len(arrays["x_test"])
    assert d["train_size"] + d["val_size"] == 1200 and d["input_shape"] == [8, 8] and d["num_classes"] == 10
    assert any("transfer set: 300 unlabeled rows of the uploaded dataset" in m for _, m in reporter.events)
    # the test split is exactly the upload's: the exported student scores the reported accuracy there
    files = {f.kind: f for f in result.files}
    student = load_safetensors(files["safetensors"].path)
    assert (
        accuracy(predict_logits(student, arrays["x_test"]), arrays["y_test"])
        == result.report["exported"]["test_accuracy"]
    )
    with pytest.raises(ValueError, match="no file"):
        run_tiny_job(spec, tmp_path / "again", data_cache)
