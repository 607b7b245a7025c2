"""What a submission must pass beyond the spec's own validation: values the database or the
worker would choke on, a default time limit, and a cost estimate against the tenant's budget.

The estimate is deliberately coarse (it is a bound, not a forecast), computed from the spec
alone, without torch:
- parameters of every model the job trains (app/contract/stages.state_shapes);
- activations of one training batch: batch_size x (input + every stage's output) x 4 bytes,
  x 3 for what backward keeps (activations, their gradients, the optimizer's view);
- compute: 6 x parameters x examples x epochs per run (forward + backward), over every run:
  each trained teacher once, the student once per seed, and the baseline once more per seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

from app.config import get_settings
from app.contract import standard
from app.contract.architectures import Arch
from app.contract.catalog import DATASETS
from app.contract.fit import ArtifactFacts, DataFacts, data_facts
from app.contract.spec import JobSpec, TeacherTrain
from app.contract.stages import stage_shapes, state_shapes
from app.models import Tenant

SEED_LIMIT = 2**32  # numpy's legacy seeding and torch's generators take seeds below this
FLOAT_BYTES = 4
BACKWARD_FACTOR = 3
FLOPS_PER_PARAMETER_EXAMPLE = 6  # forward 2, backward 4
S = TypeVar("S", bound=JobSpec)  # a JobSpec, or a subclass of it (app.api.schemas.JobSubmission)


@dataclass(frozen=True)
class Cost:
    parameters: int  # of the largest model the job trains
    batch_activation_bytes: int  # of the largest batch it trains on
    flops: float  # the whole job


def _field(pointer: str, detail: str, type_: str = "value_error") -> dict[str, str]:
    return {"pointer": pointer, "in": "body", "detail": detail, "type": type_}


def _walk(value: Any, path: str = "") -> Any:
    """(JSON pointer, key, value) of every leaf of a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}/{i}")
    else:
        yield path, value


def value_errors(document: dict) -> list[dict[str, str]]:
    """Strings with NUL (PostgreSQL cannot store them) and seeds the worker cannot use."""
    errors = []
    for path, value in _walk(document):
        if isinstance(value, str) and "\x00" in value:
            errors.append(_field(path, "holds a NUL character; send plain text"))
        parts = path.split("/")
        is_seed = parts[-1].endswith("seed") or (len(parts) > 1 and parts[-2] == "seeds")
        if is_seed and isinstance(value, int) and not 0 <= value < SEED_LIMIT:
            errors.append(_field(path, f"a seed must be at least 0 and below 2**32 ({SEED_LIMIT})"))
    return errors


def with_default_time_limit(spec: S) -> S:
    """Every job ends: a spec without a time limit gets DISTILL_DEFAULT_TIME_LIMIT_SECONDS."""
    if spec.limits.time_limit_seconds is not None:
        return spec
    limits = spec.limits.model_copy(update={"time_limit_seconds": get_settings().default_time_limit_seconds})
    return spec.model_copy(update={"limits": limits})


def _parameters(arch: Arch, data: DataFacts) -> int:
    if isinstance(arch, (standard.TimmArch, standard.TorchvisionArch)):  # the names file's facts: no torch in the API
        return standard.state_size(arch, data.input_shape, data.num_classes)[2]
    return sum(math.prod(shape) for shape, _ in state_shapes(arch, data.input_shape, data.num_classes).values())


def _batch_bytes(arch: Arch, data: DataFacts, batch_size: int) -> int:
    per_example = (
        math.prod(data.input_shape)
        + sum(math.prod(s) for s in stage_shapes(arch, data.input_shape).values())
        + data.num_classes
    )
    return per_example * batch_size * FLOAT_BYTES * BACKWARD_FACTOR


def _examples(spec: JobSpec, artifacts: dict[str, ArtifactFacts], data: DataFacts) -> int:
    if spec.dataset.name is not None:
        return DATASETS[spec.dataset.name].train_size
    assert spec.dataset.artifact is not None  # a DatasetSpec names a dataset or an artifact
    found = artifacts[spec.dataset.artifact].inspection
    return int(found.get("rows", 0)) + data.unlabeled_rows


def estimate(spec: JobSpec, artifacts: dict[str, ArtifactFacts]) -> Cost:
    data = data_facts(spec, artifacts)
    examples = _examples(spec, artifacts, data)
    student_runs = len(spec.seeds) * (2 if spec.baseline else 1)
    trained = [(spec.student.arch, spec.training.epochs * student_runs, spec.training.batch_size)]
    trained += [(m.arch, m.epochs, m.batch_size) for m in spec.teacher.members if isinstance(m, TeacherTrain)]
    parameters = [(_parameters(arch, data), epochs, _batch_bytes(arch, data, batch)) for arch, epochs, batch in trained]
    return Cost(
        parameters=max(p for p, _, _ in parameters),
        batch_activation_bytes=max(b for _, _, b in parameters),
        flops=float(sum(FLOPS_PER_PARAMETER_EXAMPLE * p * examples * e for p, e, _ in parameters)),
    )


def cost_errors(spec: JobSpec, artifacts: dict[str, ArtifactFacts], tenant: Tenant) -> list[dict[str, str]]:
    """The estimate against the budget (the tenant's own flops budget wins over the setting)."""
    settings = get_settings()
    cost = estimate(spec, artifacts)
    budget = tenant.max_job_flops or settings.max_job_flops
    errors = []
    if cost.parameters > settings.max_model_parameters:
        errors.append(
            _field(
                "/student/arch" if _student_is_largest(spec, artifacts, cost) else "/teacher",
                f"the largest model of this job has about {cost.parameters:,} parameters; "
                f"the budget is {settings.max_model_parameters:,} per model "
                "(DISTILL_MAX_MODEL_PARAMETERS). Use a smaller architecture.",
                "over_budget",
            )
        )
    if cost.batch_activation_bytes > settings.max_batch_activation_bytes:
        errors.append(
            _field(
                "/training/batch_size",
                f"one training batch needs about {cost.batch_activation_bytes:,} bytes of "
                f"activations; the budget is {settings.max_batch_activation_bytes:,} "
                "(DISTILL_MAX_BATCH_ACTIVATION_BYTES). Use a smaller batch or model.",
                "over_budget",
            )
        )
    if cost.flops > budget:
        errors.append(
            _field(
                "/training/epochs",
                f"the job is estimated at {cost.flops:.3g} floating-point operations "
                f"(6 x parameters x examples x epochs over every run); this tenant's budget "
                f"is {budget:.3g} per job. Use fewer epochs, seeds or a smaller model.",
                "over_budget",
            )
        )
    return errors


def _student_is_largest(spec: JobSpec, artifacts: dict[str, ArtifactFacts], cost: Cost) -> bool:
    return _parameters(spec.student.arch, data_facts(spec, artifacts)) == cost.parameters
