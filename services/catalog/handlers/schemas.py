"""The filterable and sortable fields of catalog resources (the documented AIP-160 surface)."""

from __future__ import annotations

from services.catalog.domain.model import ExtensionState, VersionState
from services.platform.query.filter import FieldKind, FieldSpec, FilterSchema

EXTENSION_FILTER = FilterSchema(
    {
        "category": FieldSpec(("category",), FieldKind.STRING),
        "subcategory": FieldSpec(("subcategory",), FieldKind.STRING),
        "publisher": FieldSpec(("publisher",), FieldKind.STRING),
        "display_name": FieldSpec(("display_name",), FieldKind.STRING),
        "tags": FieldSpec(("tags",), FieldKind.STRING_LIST),
        "state": FieldSpec(("state",), FieldKind.ENUM, frozenset(s.value for s in ExtensionState)),
        "labels": FieldSpec(("labels",), FieldKind.STRING_MAP),
        "create_time": FieldSpec(("create_time",), FieldKind.TIMESTAMP),
    }
)

EXTENSION_ORDER: dict[str, tuple[str, ...]] = {
    "name": ("extension_id",),
    "display_name": ("display_name",),
    "category": ("category",),
    "publisher": ("publisher",),
    "create_time": ("create_time",),
    "update_time": ("update_time",),
}

VERSION_FILTER = FilterSchema(
    {
        "state": FieldSpec(("state",), FieldKind.ENUM, frozenset(s.value for s in VersionState)),
        "create_time": FieldSpec(("create_time",), FieldKind.TIMESTAMP),
        "long_running": FieldSpec(("long_running",), FieldKind.BOOL),
        "supports_validation": FieldSpec(("supports_validation",), FieldKind.BOOL),
    }
)
