"""Phase names: one spelling for the API, the engine and the clients."""

from __future__ import annotations

PHASES = ("teacher", "assistant", "soft_targets", "generation", "student", "baseline", "evaluate", "export")
"""Every phase a job may report, in the order they run.  A job runs a subsequence: teacher_assistant
adds "assistant" (one run per link); born_again replaces "student" by "generation" (the last
generation is the student)."""

KD_PHASES = ("teacher", "soft_targets", "student", "baseline", "evaluate", "export")
"""The phases of a plain (one-teacher, one-student) method job, baseline included."""

TEACHER, ASSISTANT, SOFT_TARGETS, GENERATION, STUDENT, BASELINE, EVALUATE, EXPORT = PHASES


# --- run names: what a phase's runs are called in metrics, events, checkpoints and the report --


def seed_run(seed: int) -> str:
    """A student's or a baseline's run."""
    return f"seed={seed}"


def member_run(index: int, members: int) -> str:
    """A teacher's run: "teacher" alone, "member=<i>" (1-based) in an ensemble."""
    return "teacher" if members == 1 else f"member={index}"


def link_run(index: int) -> str:
    """A teacher assistant's run (1-based, largest assistant first)."""
    return f"link={index}"


def generation_run(generation: int, seed: int) -> str:
    """A born-again generation's run (generation 1 learns from the teacher)."""
    return f"gen={generation} seed={seed}"
