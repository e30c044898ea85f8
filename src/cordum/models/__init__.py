"""Plain data shared by every room: jobs, decisions, constraints, remediations.

Nothing here imports anything else from ``cordum``; everything else may import this.
"""

from cordum.models.constraints import Budgets, Constraints, DiffLimits, Sandbox, Toolchain
from cordum.models.decision import (
    Decision,
    DecisionRecord,
    Explanation,
    OutputDecision,
    OutputVerdict,
    Remediation,
    RuleOutcome,
    RuleTrace,
)
from cordum.models.job import Job, Priority, label_text

__all__ = [
    "Budgets",
    "Constraints",
    "Decision",
    "DecisionRecord",
    "DiffLimits",
    "Explanation",
    "Job",
    "OutputDecision",
    "OutputVerdict",
    "Priority",
    "Remediation",
    "RuleOutcome",
    "RuleTrace",
    "Sandbox",
    "Toolchain",
    "label_text",
]
