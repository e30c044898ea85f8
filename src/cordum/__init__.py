"""Cordum for Python: a control plane that governs what AI agents do.

The Safety Kernel (``cordum.policy``) decides, before anything runs, whether an agent's
action is allowed. See ``docs/`` for the concepts and the policy language.
"""

__version__ = "0.1.0"
