"""The sweep request: a base job spec, axes to vary, how to sample them, a budget."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_TRIALS = 200  # a sweep bigger than this is several sweeps


class Budget(BaseModel):
    """What the chosen student must fit: at most one of these (each on the student's report)."""

    model_config = ConfigDict(extra="forbid")
    latency_ms: float | None = Field(
        None,
        gt=0,
        description="The student's latency for one example (batch 1) in onnxruntime on the CPU, "
        "in ms, as its trial measured it (1 intra-op thread).",
    )
    params: int | None = Field(None, gt=0, description="Parameters of the student.")
    bytes: int | None = Field(None, gt=0, description="Bytes of the student's weights.")

    @model_validator(mode="after")
    def _one(self) -> Budget:
        if sum(v is not None for v in (self.latency_ms, self.params, self.bytes)) != 1:
            raise ValueError("give exactly one of latency_ms, params, bytes")
        return self

    def limit(self) -> tuple[str, float]:
        """(report key, limit)."""
        if self.latency_ms is not None:
            return "latency_ms", self.latency_ms
        if self.params is not None:
            return "parameters", float(self.params)
        return "bytes", float(self.bytes or 0)


class EarlyStop(BaseModel):
    """The median rule: a trial whose mean validation accuracy at `fraction` of its student
    epochs is below the median of the trials that got there is cancelled."""

    model_config = ConfigDict(extra="forbid")
    rule: Literal["median"] = "median"
    fraction: float = Field(0.5, gt=0, lt=1)
    min_trials: int = Field(2, ge=1, description="Trials that must have reached the point before any is stopped.")


class SweepSpec(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "digits-grid",
                    "base": {
                        "dataset": {"name": "digits"},
                        "teacher": {"train": {"arch": {"name": "mlp", "hidden": [64]}, "epochs": 6}},
                        "student": {"arch": {"name": "mlp", "hidden": [16]}},
                        "method": {"name": "kd"},
                        "training": {"epochs": 4},
                        "seeds": [0],
                    },
                    "axes": {"method.temperature": [2, 4], "method.alpha": [0.5, 0.9]},
                }
            ]
        },
    )

    name: str | None = Field(None, max_length=200)
    base: dict[str, Any] = Field(description="A job spec (as POST /v1/jobs takes) that every trial starts from.")
    axes: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Dotted spec paths and the values to try: method.name, method.temperature, method.alpha, "
        "method.<parameter>, student.arch (a ladder of architectures), seeds (lists of seeds), or any other field. "
        "Seeds inside a trial are that configuration's repeats (mean ± std).",
    )
    sampling: Literal["grid", "random"] = "grid"
    trials: int | None = Field(
        None, ge=1, le=MAX_TRIALS, description="Random: how many configurations to draw; grid: at most this many."
    )
    random_seed: int = Field(0, ge=0, description="Random sampling's seed (the same seed draws the same trials).")
    max_parallel: int = Field(
        2, ge=1, le=32, description="At most this many of the sweep's trials are queued or running at once."
    )
    controls: list[Literal["pseudo_label"]] = Field(
        default_factory=list, description="pseudo_label: one hard-label control trial per student architecture."
    )
    budget: Budget | None = None
    early_stop: EarlyStop | None = Field(None, description="Off unless given.")

    @model_validator(mode="after")
    def _axes_non_empty(self) -> SweepSpec:
        for path, values in self.axes.items():
            if not values:
                raise ValueError(f"axis {path!r} has no values")
        return self
