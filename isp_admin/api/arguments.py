"""The API's argument parser: webargs, with JSON types taken exactly and only text the database can store.

marshmallow is lenient where the API must not be: an Integer field turns 10.99 into 10 and "7" into 7, and a
Boolean takes "yes" or 1. A JSON body's numbers and booleans are taken as they are typed, or refused. PostgreSQL
text cannot hold a NUL character, and an unpaired surrogate cannot be encoded at all: both are refused as field
errors (422) in bodies and query strings, rather than failing in the database (500).
"""
from __future__ import annotations

import re

import marshmallow as ma
from webargs.flaskparser import FlaskParser

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_MESSAGE = "Contains a NUL character or an unpaired surrogate."


class FullMatch(ma.validate.Regexp):
    """A pattern the whole value must match, as the spec's `pattern` ("^…$") means: re.match would let "A\n" by."""

    def __call__(self, value):
        """Return `value` when all of it matches, else raise a ValidationError."""
        if self.regex.fullmatch(value) is None:
            raise ma.ValidationError(self._format_error(value))
        return value


class NotBlank(ma.validate.Regexp):
    """Some character that str.strip() keeps: the services strip text, and refuse what is left empty."""

    # Exactly the characters for which str.isspace() is true, written so that JSON Schema reads them alike.
    WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

    def __init__(self):
        super().__init__(f"[^{self.WHITESPACE}]", error="Must not be blank.")

    def __call__(self, value):
        """Return `value` when some character of it is not whitespace, else raise a ValidationError."""
        if self.regex.search(value) is None:
            raise ma.ValidationError(self._format_error(value))
        return value


def unstorable_paths(value, path: str = "") -> dict[str, list[str]]:
    """Return {dotted path: [message]} for every string (or object key) in `value` the database cannot store."""
    errors: dict[str, list[str]] = {}
    if isinstance(value, str) and UNSTORABLE.search(value):
        errors[path or "json"] = [UNSTORABLE_MESSAGE]
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            if UNSTORABLE.search(str(key)):
                errors[name] = [UNSTORABLE_MESSAGE]
            else:
                errors.update(unstorable_paths(item, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            errors.update(unstorable_paths(item, f"{path}.{index}" if path else str(index)))
    return errors


def json_type_errors(schema: ma.Schema, data, path: str = "") -> dict[str, list[str]]:
    """Return {dotted path: [message]} for each integer or boolean field whose JSON value has another type."""
    errors: dict[str, list[str]] = {}
    if not isinstance(data, dict):
        return errors  # marshmallow refuses a body that is not an object itself
    for name, field in schema.fields.items():
        key = field.data_key or name
        if key in data:
            errors.update(_field_type_errors(field, data[key], f"{path}{key}"))
    return errors


def _field_type_errors(field: ma.fields.Field, value, path: str) -> dict[str, list[str]]:
    if value is None:
        return {}  # allow_none is the field's own business
    if isinstance(field, ma.fields.Integer) and type(value) is not int:
        return {path: ["Not a valid integer."]}
    if isinstance(field, ma.fields.Boolean) and type(value) is not bool:
        return {path: ["Not a valid boolean."]}
    if isinstance(field, ma.fields.Nested) and not field.many:
        return json_type_errors(field.schema, value, f"{path}.")
    errors: dict[str, list[str]] = {}
    if isinstance(field, ma.fields.List | ma.fields.Nested) and isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(field, ma.fields.List):
                errors.update(_field_type_errors(field.inner, item, f"{path}.{index}"))
            else:
                errors.update(json_type_errors(field.schema, item, f"{path}.{index}."))
    return errors


class ApiArgumentsParser(FlaskParser):
    """webargs' Flask parser, refusing inexact JSON types and unstorable text before marshmallow loads them."""

    def pre_load(self, location_data, *, schema: ma.Schema, req, location: str):
        """Refuse, as field errors, what marshmallow would coerce or the database could not store."""
        errors: dict[str, list[str]] = {}
        if location == "json":
            errors.update(json_type_errors(schema, location_data))
            errors.update(unstorable_paths(location_data))
        elif location in ("query", "querystring"):
            errors.update({key: [UNSTORABLE_MESSAGE] for key, value in req.args.items(multi=True)
                           if UNSTORABLE.search(key) or UNSTORABLE.search(value)})
        if errors:
            raise ma.ValidationError(errors)
        return super().pre_load(location_data, schema=schema, req=req, location=location)
