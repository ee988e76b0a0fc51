"""What the control-plane API accepts and returns: request bodies, responses and the error envelope.

Request bodies refuse fields a client may not set (``extra="forbid"``), NUL characters and unpaired
surrogates (which no store can keep). Response models describe what the routes return and keep any
field a newer library version adds (``extra="allow"``), so the OpenAPI document stays a contract
without trimming answers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Integer columns: model and dataset versions are 32-bit, times and sequence numbers 64-bit.
INT32 = 2**31 - 1
INT64 = 2**63 - 1


def unstorable_text(value: Any) -> str | None:
    """Why ``value`` (or a string inside it) cannot be stored, or None when it can."""
    if isinstance(value, str):
        if "\x00" in value:
            return "text must not contain NUL (\\u0000) characters"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "text must be valid Unicode (no unpaired surrogates)"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = unstorable_text(key) or unstorable_text(item)
            if problem:
                return problem
    elif isinstance(value, list | tuple):
        for item in value:
            problem = unstorable_text(item)
            if problem:
                return problem
    return None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        problem = unstorable_text(data)
        if problem:
            raise ValueError(problem)
        return data


class AliasBody(_Body):
    version: int = Field(ge=1, le=INT32)


class VersionEdit(_Body):
    description: str | None = Field(None, max_length=10_000)
    tags: dict[str, str] | None = None
    card: dict[str, str] | None = None


class PromoteBody(_Body):
    to: str = Field(min_length=1, max_length=64)


class ApproveBody(_Body):
    to: str = Field(min_length=1, max_length=64)
    comment: str | None = Field(None, max_length=10_000)


class RejectBody(_Body):
    to: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=10_000)


class PolicyBody(_Body):
    source: str = Field(min_length=1, max_length=200_000)


class TokenBody(_Body):
    principal: str | None = Field(None, max_length=128)
    role: str | None = Field(None, max_length=16)
    models: list[str] | None = Field(None, max_length=100)
    expires_in: str | None = Field(None, max_length=16, description="e.g. 30d, 12h")
    description: str | None = Field(None, max_length=1000)


class PrincipalBody(_Body):
    name: str = Field(min_length=1, max_length=128)
    role: str = Field("viewer", max_length=16)
    kind: str = Field("user", max_length=16)


class GrantBody(_Body):
    role: str = Field(max_length=16)
    model: str | None = Field(None, max_length=256)


# -- responses -------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. not_found, invalid_input")
    message: str = Field(description="What went wrong and what to do next")
    details: Any = Field(None, description="Structured context, such as the invalid fields")


class ErrorEnvelope(BaseModel):
    """Every error response: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorBody


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class Health(_Out):
    status: str
    version: str
    schema_revision: str | None


class ExperimentOut(_Out):
    id: str
    name: str
    runs: int
    created_at: str | None


class ExperimentPage(_Out):
    experiments: list[ExperimentOut]
    next_page_token: str | None = None


class RunPage(_Out):
    runs: list[dict[str, Any]]
    next_page_token: str | None = None


class ModelOut(_Out):
    name: str
    versions: int
    latest: int
    aliases: dict[str, int]
    created_at: str | None


class ModelPage(_Out):
    models: list[ModelOut]
    next_page_token: str | None = None


class VersionOut(_Out):
    id: str
    name: str
    version: int
    uri: str
    status: str
    flavor: str
    format: str
    flavor_meta: dict[str, Any]
    manifest: dict[str, dict[str, Any]]
    manifest_digest: str
    schema_: dict[str, Any] | None = Field(alias="schema")
    lineage: dict[str, Any]
    run_id: str | None
    description: str | None
    tags: dict[str, str]
    card: dict[str, str]
    signed: bool
    signature: str | None
    signing_key: str | None
    created_at: str | None
    created_by: str | None
    archived_at: str | None
    aliases: list[str]


class VersionPage(_Out):
    versions: list[VersionOut]
    next_page_token: str | None = None


class ApprovalOut(_Out):
    approver: str
    decision: str
    comment: str | None
    at: int
    artifact_digest: str
    policy_version: int | None


class RequestOut(_Out):
    id: str
    model: str
    version: int
    environment: str
    status: str
    policy_version: int | None
    artifact_digest: str
    approvals_needed: int
    report: dict[str, Any]
    requested_by: str
    requested_at: int
    decided_at: int | None
    reason: str | None
    approvals: list[ApprovalOut]


class RequestPage(_Out):
    requests: list[RequestOut]
    next_page_token: str | None = None


class TokenOut(_Out):
    id: str
    principal: str
    hint: str
    ceiling: str | None
    models: list[str] | None
    description: str | None
    created_at: int
    created_by: str
    expires_at: int | None
    revoked_at: int | None
    last_used_at: int | None


class NewToken(TokenOut):
    token: str = Field(description="The secret; shown once, only its SHA-256 is stored")


class TokenPage(_Out):
    tokens: list[TokenOut]
    next_page_token: str | None = None


class PrincipalOut(_Out):
    id: str
    name: str
    kind: str
    role: str
    created_at: int
    created_by: str
    disabled_at: int | None
    grants: dict[str, str]


class PrincipalPage(_Out):
    principals: list[PrincipalOut]
    next_page_token: str | None = None


class AuditEntryOut(_Out):
    seq: int
    time: int
    actor: str
    action: str
    subject: str
    payload: Any
    prev_hash: str
    hash: str


class AuditPage(_Out):
    entries: list[AuditEntryOut]
    next_after_seq: int | None
