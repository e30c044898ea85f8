"""The safety policy document: what a policy YAML may contain.

Pydantic models validate the document and export its JSON Schema for editors. Values
that are compared case-insensitively are stored trimmed and lower-cased, and set-like
lists are stored sorted and de-duplicated, so the validated document is already the
canonical form the snapshot id is computed from.

Dialects of the original are accepted here and nowhere else: ``name`` for ``id``,
``when`` for ``match``, singular match fields (``topic``, ``capability``, ...), decision
spellings in any case, ``constraints.max_runtime_sec``. Plain ``risk_tags`` lists mean
"all of" unless the loader is told the document was written for the original.

The modules: :mod:`.values` (value types and spellings), :mod:`.match` (conditions),
:mod:`.rules` (rules, input/output rules, legacy tenants), :mod:`.document` (the whole).
"""

from cordum.policy.schema.document import PolicyDocument, document_json_schema
from cordum.policy.schema.match import (
    LABEL_DIALECT_KEYS,
    InputMatch,
    Match,
    McpFilter,
    OutputMatch,
    RiskTagsCondition,
    match_field_names,
)
from cordum.policy.schema.rules import InputRule, LegacyTenant, OutputRule, Rule, Velocity
from cordum.policy.schema.values import (
    DEFAULT_DECISIONS,
    DIALECT_CORDUM,
    DIALECT_ORIGINAL,
    DIALECTS,
    INPUT_DECISIONS,
    MAX_VELOCITY_REQUESTS,
    MCP_DIMENSIONS,
    MEMBERSHIP_FIELDS,
    OUTPUT_DECISIONS,
    RULE_DECISIONS,
    SCANNER_SPELLINGS,
    SINGLE_VALUED_FIELDS,
    UNVERSIONED,
    VELOCITY_FIELDS,
    RuleDecision,
    Scanner,
    Severity,
    policy_error,
)

__all__ = [
    "DEFAULT_DECISIONS",
    "DIALECTS",
    "DIALECT_CORDUM",
    "DIALECT_ORIGINAL",
    "INPUT_DECISIONS",
    "LABEL_DIALECT_KEYS",
    "MAX_VELOCITY_REQUESTS",
    "MCP_DIMENSIONS",
    "MEMBERSHIP_FIELDS",
    "OUTPUT_DECISIONS",
    "RULE_DECISIONS",
    "SCANNER_SPELLINGS",
    "SINGLE_VALUED_FIELDS",
    "UNVERSIONED",
    "VELOCITY_FIELDS",
    "InputMatch",
    "InputRule",
    "LegacyTenant",
    "Match",
    "McpFilter",
    "OutputMatch",
    "OutputRule",
    "PolicyDocument",
    "RiskTagsCondition",
    "Rule",
    "RuleDecision",
    "Scanner",
    "Severity",
    "Velocity",
    "document_json_schema",
    "match_field_names",
    "policy_error",
]
