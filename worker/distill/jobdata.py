"""A job's data: the teacher's splits, and the students' (a share of the training set, a
transfer set) and the baseline's (labels only) made from them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from app.contract.phases import BASELINE, TEACHER
from app.contract.spec import JobSpec
from worker.distill import events
from worker.distill.data import (
    Splits,
    input_stats,
    load_dataset,
    load_unlabeled,
    load_uploaded,
    mnist1d_transfer,
    student_train,
    with_transfer,
)
from worker.distill.inputs import JobInputs


def uploaded_npz(spec: JobSpec, inputs: JobInputs) -> Path:
    if inputs.dataset_npz is None:
        raise ValueError(f"dataset artifact {spec.dataset.artifact!r}: the job was given no file for it")
    return Path(inputs.dataset_npz)


@dataclass
class JobData:
    splits: Splits  # the teacher's: all of the training set
    stats: tuple[float, float]  # the models' input normalisation, from the teacher's training set
    data_cache: Path
    students: Splits  # the students' and assistants': a share, plus a transfer set
    labeled: Splits  # the baseline's: the students' share, labels only
    transfer_size: int = 0

    @classmethod
    def load(cls, spec: JobSpec, inputs: JobInputs, data_cache: Path) -> JobData:
        if spec.dataset.artifact is not None:
            splits = load_uploaded(uploaded_npz(spec, inputs), spec.dataset)
        else:
            splits = load_dataset(spec.dataset, Path(data_cache))
        return cls(splits, input_stats(splits.train.x), Path(data_cache), students=splits, labeled=splits)

    def for_phase(self, phase: str) -> Splits:
        if phase == TEACHER:
            return self.splits
        return self.labeled if phase == BASELINE else self.students

    def prepare_students(self, spec: JobSpec, inputs: JobInputs) -> list[str]:
        """Make the students' and the baseline's splits; returns what to tell the user."""
        said = []
        if spec.dataset.train_fraction < 1.0:
            share = dataclasses.replace(self.splits, train=student_train(self.splits, spec.dataset))
            self.students = self.labeled = share
            said.append(events.students_share(len(share.train), spec.dataset.train_fraction))
        transfer = spec.dataset.transfer
        if transfer is not None:
            if transfer.unlabeled:
                extra = load_unlabeled(uploaded_npz(spec, inputs))
            else:
                assert transfer.extra_generated is not None  # TransferSpec holds one of the two
                extra = mnist1d_transfer(transfer.extra_generated, self.data_cache)
            self.transfer_size = len(extra)
            self.students = dataclasses.replace(self.students, train=with_transfer(self.students.train, extra))
            said.append(events.transfer_set(self.transfer_size, transfer.unlabeled))
        return said
