"""The OpenAPI schema of a request Struct says that unknown fields are refused.

msgspec refuses unknown fields of a Struct declared ``forbid_unknown_fields=True``
(every request body and filter is), but Litestar's schema for a Struct does not say
so, and a client generated from the schema would learn it only from a 422. This
plugin takes Litestar's own schema for such a Struct and adds
``additionalProperties: false``, ``oneOf`` where a Struct declares fields of which
exactly one must be given (``exactly_one_of``), and the ``enum`` of the active pipeline
definition's stage names on fields that must name one (``stage_fields``: a stage the
definition lacks is a 422, so the schema says which are valid). Response Structs do
not forbid unknown fields and keep an open schema, so a client need not reject a field
added later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi.spec import OpenAPIType, Schema

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.typing import FieldDefinition


class ClosedStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's Struct schema, closed (``additionalProperties: false``) where msgspec
    refuses unknown fields. Registered ahead of Litestar's plugin in ``create_app``,
    with the names of the definition's stages."""

    def __init__(self, stages: tuple[str, ...]) -> None:
        self.stages = stages

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if isinstance(info, msgspec.inspect.StructType) and info.forbid_unknown_fields:
            schema.additional_properties = False
        exactly_one = getattr(field_definition.type_, "exactly_one_of", ())
        if exactly_one:
            # Each branch holds when its field is present with a value of its type (not
            # null); a body must match exactly one, as ``check_selection`` checks.
            schema.one_of = [
                Schema(required=[name], properties={name: Schema(type=OpenAPIType(kind))})
                for name, kind in exactly_one
            ]
        for name in getattr(field_definition.type_, "stage_fields", ()):
            field = (schema.properties or {}).get(name)
            if isinstance(field, Schema):
                field.enum = list(self.stages)
        return schema
