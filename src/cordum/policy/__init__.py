"""The Safety Kernel: policy as code that decides, before anything runs, what an agent may do.

Typical use, embedded in an agent process::

    import cordum.policy

    policy = cordum.policy.load("policies/")          # a file, a directory of bundles, or YAML text
    record = policy.evaluate({"topic": "job.k8s.delete-namespace", "risk_tags": ["prod"]})
    if not record.decision.allows:
        print(record.reason, [r.title for r in record.remediations])

``evaluate`` counts velocity, ``simulate`` does not, ``explain`` adds a per-rule trace.
Every load error is a :class:`PolicyLoadError` listing each problem with file, line and
column; an invalid policy is never returned.
"""

from cordum.models import Decision, DecisionRecord, Explanation, Job, OutputVerdict
from cordum.policy.engine import Policy
from cordum.policy.errors import InvalidJobError, PolicyIssue, PolicyLoadError
from cordum.policy.loader import load, load_bundles, load_text
from cordum.policy.schema import DIALECT_CORDUM, DIALECT_ORIGINAL, PolicyDocument
from cordum.policy.velocity import InMemoryVelocityStore, VelocityCount, VelocityStore

__all__ = [
    "DIALECT_CORDUM",
    "DIALECT_ORIGINAL",
    "Decision",
    "DecisionRecord",
    "Explanation",
    "InMemoryVelocityStore",
    "InvalidJobError",
    "Job",
    "OutputVerdict",
    "Policy",
    "PolicyDocument",
    "PolicyIssue",
    "PolicyLoadError",
    "VelocityCount",
    "VelocityStore",
    "load",
    "load_bundles",
    "load_text",
]
