"""The OpenAPI side of the response schemas: a TypedDict's docstring becomes its description."""

import inspect

from litestar._openapi.schema_generation import SchemaCreator
from litestar._openapi.schema_generation.plugins import TypedDictSchemaPlugin
from litestar.openapi.spec import Schema
from litestar.typing import FieldDefinition


class DescribedTypedDicts(TypedDictSchemaPlugin):
    """Litestar's own TypedDict schemas, each with its class docstring as the description.

    Litestar describes enums by their docstring but not TypedDicts; its TypedDict plugin is not
    public, so this subclass only adds the description to what it builds. Give an instance to
    `Litestar(plugins=[...])`: plugins given there come before the built-in ones.
    """

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        doc = field_definition.type_.__doc__
        if doc and schema.description is None:
            schema.description = inspect.cleandoc(doc)
        return schema
