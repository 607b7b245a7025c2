"""Phase names: one spelling for the API, the engine and the clients."""

from __future__ import annotations

PHASES = (
    "teacher", "assistant", "soft_targets", "generation", "student", "baseline", "evaluate", "export"
)
"""Every phase a job may report, in the order they run.  A job runs a subsequence: teacher_assistant
adds "assistant" (one run per link); born_again replaces "student" by "generation" (the last
generation is the student)."""

KD_PHASES = ("teacher", "soft_targets", "student", "baseline", "evaluate", "export")
"""The phases of a plain (one-teacher, one-student) method job, baseline included."""
