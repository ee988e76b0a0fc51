"""The model registry: versions, aliases, flavors, signatures, integrity, lineage and model cards."""

from shipway.registry.card import missing_fields, render_card
from shipway.registry.integrity import generate_keypair
from shipway.registry.loading import (
    LoadedModel,
    VerifyReport,
    load_model,
    parse_model_uri,
    resolve,
    verify_version,
)
from shipway.registry.signature import Signature, infer_signature, validate
from shipway.registry.versions import (
    ARCHIVED,
    CARD_FIELDS,
    READY,
    Edit,
    ModelSummary,
    ModelVersion,
    archive_version,
    delete_alias,
    delete_artifacts,
    get_version,
    list_models,
    list_versions,
    register_model,
    set_alias,
    sign_version,
    update_version,
    version_history,
)

__all__ = [
    "ARCHIVED",
    "CARD_FIELDS",
    "READY",
    "Edit",
    "LoadedModel",
    "ModelSummary",
    "ModelVersion",
    "Signature",
    "VerifyReport",
    "archive_version",
    "delete_alias",
    "delete_artifacts",
    "generate_keypair",
    "get_version",
    "infer_signature",
    "list_models",
    "list_versions",
    "load_model",
    "missing_fields",
    "parse_model_uri",
    "register_model",
    "render_card",
    "resolve",
    "set_alias",
    "sign_version",
    "update_version",
    "validate",
    "verify_version",
    "version_history",
]
