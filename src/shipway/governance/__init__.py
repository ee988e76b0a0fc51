"""Governance: identities and tokens, policies and gates, promotion and approval, the audit chain."""

from __future__ import annotations

from shipway.governance import audit
from shipway.governance.identity import (
    Principal,
    TokenInfo,
    add_principal,
    authenticate,
    create_token,
    disable_principal,
    grant,
    list_principals,
    list_tokens,
    require,
    revoke_token,
    whoami,
)
from shipway.governance.policy import Policy, apply_file, apply_policy, current_policy, get_policy
from shipway.governance.promotion import (
    PromotionRequest,
    approve,
    get_request,
    list_requests,
    promote,
    reject,
)

__all__ = [
    "Policy",
    "Principal",
    "PromotionRequest",
    "TokenInfo",
    "add_principal",
    "apply_file",
    "apply_policy",
    "approve",
    "audit",
    "authenticate",
    "create_token",
    "current_policy",
    "disable_principal",
    "get_policy",
    "get_request",
    "grant",
    "list_principals",
    "list_requests",
    "list_tokens",
    "promote",
    "reject",
    "require",
    "revoke_token",
    "whoami",
]
