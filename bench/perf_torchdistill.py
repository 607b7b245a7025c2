"""torchdistill's DistillationBox on the same data, model and settings as bench/perf.py's hand
loop (MNIST-1D, MLP 64-64 student, batch 128, AdamW at the same peak lr with a per-step cosine,
KD at T=4 with 0.9 of the weight on the soft term, a validation pass per epoch), driven the way
its own examples drive it: a DataLoader over a dataset, `forward_process` and
`post_forward_process` per batch. Two teachers:

- "teacher every batch": the CNN teacher runs on every batch (torchdistill's default);
- "fed cached logits": the teacher is a lookup of the same fixed logits the hand loop uses, by
  the batch's row indices (the dataset hands them over in the supplementary dict).

torchdistill is not a dependency of the project (it is measured when installed:
`pip install --no-deps torchdistill`, its imports work with the pinned torch and torchvision).
"""

from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, RandomSampler


def available() -> bool:
    try:
        import torchdistill  # noqa: F401
    except ImportError:
        return False
    return True


class _Indexed(Dataset):
    """(x, y, {"index": i}): torchdistill unpacks the third item as the supplementary dict."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i], {"index": i}


class _CachedTeacher(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.logits[index]


def _register_cached_forward() -> str:
    from torchdistill.core.interfaces.registry import FORWARD_PROC_FUNC_DICT

    def cached_teacher_forward(model, sample_batch, targets=None, supp_dict=None, **kwargs):
        return model(supp_dict["index"])

    FORWARD_PROC_FUNC_DICT["cached_teacher_forward"] = cached_teacher_forward
    return "cached_teacher_forward"


def _config(setup, teacher_forward: str) -> dict:
    optim, total = setup.optim, setup.optim.epochs * math.ceil(len(setup.splits.train) / setup.optim.batch_size)
    kd = {
        "student_module_path": ".",
        "student_module_io": "output",
        "teacher_module_path": ".",
        "teacher_module_io": "output",
        "temperature": 4.0,
        "alpha": 0.1,  # torchdistill's alpha weighs the hard (CE) term: ours is 1 - 0.9
    }
    return {
        "num_epochs": optim.epochs,
        "train_data_loader": {
            "dataset_id": "train",
            "sampler": {"class_or_func": RandomSampler, "kwargs": {}},
            "kwargs": {"batch_size": optim.batch_size, "num_workers": 0},
            "requires_supp": False,  # the dataset gives its own supplementary dict
        },
        "teacher": {"forward_proc": teacher_forward, "requires_grad": False},
        "student": {"forward_proc": "forward_batch_only", "requires_grad": True},
        "optimizer": {"key": "AdamW", "kwargs": {"lr": optim.lr, "weight_decay": optim.weight_decay}},
        "scheduler": {"key": "CosineAnnealingLR", "kwargs": {"T_max": total}, "scheduling_step": 1},
        "criterion": {
            "key": "WeightedSumLoss",
            "kwargs": {"sub_terms": {"kd": {"criterion": {"key": "KDLoss", "kwargs": kd}, "weight": 1.0}}},
        },
    }


def epoch_seconds(setup, mode: str) -> float:
    """Seconds per epoch of a torchdistill run; mode "teacher" or "cached"."""
    from torchdistill.core.distillation import DistillationBox

    logging.getLogger("torchdistill").setLevel(logging.WARNING)
    x, y = torch.as_tensor(setup.splits.train.x), torch.as_tensor(setup.splits.train.y)
    xv, yv = torch.as_tensor(setup.splits.val.x), torch.as_tensor(setup.splits.val.y)
    if mode == "cached":
        teacher, forward = _CachedTeacher(setup.logits), _register_cached_forward()
    else:
        teacher, forward = setup.teacher, "forward_batch_only"
    student = setup.student()
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    box = DistillationBox(teacher, student, {"train": _Indexed(x, y)}, _config(setup, forward), cpu, None, False, 1)
    t0 = time.perf_counter()
    for epoch in range(setup.optim.epochs):
        box.pre_epoch_process(epoch=epoch)
        for sample_batch, targets, supp_dict in box.train_data_loader:
            loss = box.forward_process(sample_batch, targets, supp_dict)
            box.post_forward_process(loss=loss)
        box.post_epoch_process()
        student.eval()
        with torch.no_grad():
            out = student(xv)
            F.cross_entropy(out, yv).item(), (out.argmax(1) == yv).float().mean().item()
    return (time.perf_counter() - t0) / setup.optim.epochs
