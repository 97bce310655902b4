"""Validation of a workflow definition document: JSON Schema for its shape, then semantic checks."""

import json
import math
from functools import lru_cache
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
import referencing.jsonschema
from django.conf import settings
from jsonschema_specifications import REGISTRY as META_SCHEMAS

from workflows.activities.base import UnknownActivityType, get_activity
from workflows.expressions import ExpressionError, compile_expression

Problem = dict  # {"pointer": "/activities/2/type", "message": "..."}

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$"
VARIABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"

DOCUMENT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["name", "activities"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": {"type": "string", "maxLength": 2000},
        "variables": {
            "type": "array",
            "maxItems": 200,
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": VARIABLE_NAME},
                    "secret": {"type": "boolean"},
                },
                "additionalProperties": False,
            },
        },
        "input_schema": {"type": "object"},
        "activities": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1000,
            "items": {
                "type": "object",
                "required": ["id", "type"],
                "properties": {
                    "id": {"type": "string", "pattern": IDENTIFIER},
                    "type": {"type": "string", "minLength": 1, "maxLength": 100},
                },
            },
        },
        "connections": {
            "type": "array",
            "maxItems": 5000,
            "items": {
                "type": "object",
                "required": ["source", "target"],
                "properties": {
                    "source": {"type": "string"},
                    "target": {"type": "string"},
                    "outcome": {"type": "string", "minLength": 1},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}


@lru_cache(maxsize=1)
def _document_validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(DOCUMENT_SCHEMA)


# --- JSON Schemas written by definition authors (input_schema, WaitForResume's input_schema) ---------


def _refuse_retrieval(uri: str):
    # SSRF: jsonschema's default registry fetches a $ref it cannot resolve locally with urlopen,
    # from the web process, past the executors' egress controls. Nothing is ever retrieved: a
    # $ref resolves within its own schema or to a JSON Schema meta-schema (bundled), or not at all.
    raise referencing.exceptions.NoSuchResource(uri)


LOCAL_REFERENCES: referencing.Registry = META_SCHEMAS.combine(
    referencing.Registry(retrieve=_refuse_retrieval),  # type: ignore[call-arg]  # attrs class, as jsonschema does
)


def _unresolved_is_invalid(keyword_check):
    """A $ref / $dynamicRef check that reports a reference it cannot resolve as a validation error.

    A schema saved before references were checked (or one no save-time check saw) must still give
    a 4xx, never a 500, at execute or resume.
    """

    def check(validator, value, instance, schema):
        try:
            yield from keyword_check(validator, value, instance, schema)
        except referencing.exceptions.Unresolvable:
            yield jsonschema.ValidationError("the schema's reference does not resolve")

    return check


_AuthorSchemaValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    {
        keyword: _unresolved_is_invalid(jsonschema.Draft202012Validator.VALIDATORS[keyword])
        for keyword in ("$ref", "$dynamicRef")
    },
)


def json_schema_validator(schema: Any) -> jsonschema.protocols.Validator:
    """The validator of a JSON Schema written by a definition author: no $ref is ever fetched (SSRF).

    Every validator of such a schema (execute input, resume input) is built here.
    """
    return _AuthorSchemaValidator(schema, registry=LOCAL_REFERENCES)


# Keywords whose values are data, not subschemas: a "$ref" inside them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "default", "enum", "examples"})


def reference_problems(schema: Any, prefix: tuple = ()) -> list[Problem]:
    """Every $ref / $dynamicRef of ``schema`` that does not resolve locally, with its pointer (for save time)."""
    problems: list[Problem] = []
    root = referencing.jsonschema.DRAFT202012.create_resource(schema)
    # The references of a schema resolve against the closest enclosing $id (or the root).
    resolver = LOCAL_REFERENCES.resolver_with_root(root)

    def walk(node: Any, resolver: Any, tokens: tuple) -> None:
        if isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, resolver, (*tokens, index))
            return
        if not isinstance(node, dict):
            return
        if isinstance(node.get("$id"), str):
            resolver = resolver.in_subresource(referencing.jsonschema.DRAFT202012.create_resource(node))
        for keyword in ("$ref", "$dynamicRef"):
            reference = node.get(keyword)
            if isinstance(reference, str):
                try:
                    resolver.lookup(reference)
                except referencing.exceptions.Unresolvable:
                    problems.append(
                        {
                            "pointer": pointer(*tokens, keyword),
                            "message": "does not resolve within the schema (remote references are not fetched)",
                        }
                    )
        for key, value in node.items():
            if key not in _DATA_KEYWORDS:
                walk(value, resolver, (*tokens, key))

    walk(schema, resolver, prefix)
    return problems


def _escape(token: Any) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer(*tokens: Any) -> str:
    """A JSON pointer (RFC 6901) from path tokens."""
    return "".join("/" + _escape(t) for t in tokens)


def schema_error_message(error: jsonschema.ValidationError) -> str:
    """A message naming the failed rule, built from the schema only: submitted values are never echoed."""
    rule, expected = error.validator, error.validator_value
    if rule == "required":
        return "a required property is missing"
    if rule == "type":
        return f"must be of type {expected}"
    if rule == "additionalProperties":
        return "has a property that is not allowed"
    if rule in {"$ref", "$dynamicRef"}:
        return "the schema's reference does not resolve"
    if rule in {"minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum", "pattern", "enum", "const"}:
        text = json.dumps(expected)
        return f"does not satisfy {rule} {text[:100]}"
    return f"does not satisfy {rule}"


def schema_problems(validator: jsonschema.protocols.Validator, value: Any, prefix: tuple = ()) -> list[Problem]:
    problems = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path))):
        tokens = (*prefix, *error.absolute_path)
        if error.validator == "required":
            # Point at the missing property itself: the schema names it, so it is not user data.
            present = error.instance if isinstance(error.instance, dict) else {}
            for name in error.validator_value:
                if name not in present:
                    problems.append({"pointer": pointer(*tokens, name), "message": "is required"})
            continue
        problems.append({"pointer": pointer(*tokens), "message": schema_error_message(error)})
    return problems


def _expression_paths(node: Any, path: list[str], tokens: tuple) -> list[tuple[tuple, Any]]:
    """Values addressed by a dotted expression path (``*`` matches each key or item) with their tokens."""
    if not path:
        return [(tokens, node)]
    head, rest = path[0], path[1:]
    found = []
    if head == "*":
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, value in items:
            found.extend(_expression_paths(value, rest, (*tokens, key)))
    elif isinstance(node, dict) and head in node:
        found.extend(_expression_paths(node[head], rest, (*tokens, head)))
    return found


def expression_problems(node: dict, fields: tuple[str, ...], prefix: tuple) -> list[Problem]:
    problems = []
    for field in fields:
        for tokens, value in _expression_paths(node, field.split("."), prefix):
            if not isinstance(value, str):
                continue  # a literal
            try:
                compile_expression(value)
            except ExpressionError as exc:
                problems.append({"pointer": pointer(*tokens), "message": f"expression does not compile: {exc.message}"})
    return problems


# PostgreSQL stores JSON as jsonb and texts as text: neither holds a NUL character, and jsonb has no
# NaN or Infinity. A value holding one is refused where it enters (400) or where an activity
# produces it (a fault naming the activity), never left for the database to refuse on save.
MAX_STORABILITY_PROBLEMS = 20
NUL_MESSAGE = "contains a NUL character (\\u0000), which cannot be stored"
NUL_KEY_MESSAGE = "has a property name with a NUL character (\\u0000), which cannot be stored"
NOT_FINITE_MESSAGE = "is not a finite number (NaN and Infinity cannot be stored)"


def unstorable_problems(value: Any, prefix: tuple = ()) -> list[Problem]:
    """Where ``value`` holds what the database cannot store (a NUL character, a number that is not finite)."""
    problems: list[Problem] = []
    stack: list[tuple[Any, tuple]] = [(value, prefix)]
    while stack and len(problems) < MAX_STORABILITY_PROBLEMS:
        node, tokens = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                problems.append({"pointer": pointer(*tokens), "message": NUL_MESSAGE})
        elif isinstance(node, float):
            if not math.isfinite(node):
                problems.append({"pointer": pointer(*tokens), "message": NOT_FINITE_MESSAGE})
        elif isinstance(node, dict):
            for key, item in reversed(node.items()):
                if isinstance(key, str) and "\x00" in key:
                    problems.append({"pointer": pointer(*tokens), "message": NUL_KEY_MESSAGE})
                stack.append((item, (*tokens, key)))
        elif isinstance(node, list | tuple):
            stack.extend((item, (*tokens, index)) for index, item in reversed(list(enumerate(node))))
    return problems


def document_size(document: Any) -> int:
    return len(json.dumps(document, separators=(",", ":")).encode())


def validate_document(document: Any) -> list[Problem]:
    """Every problem of ``document`` as {pointer, message}; an empty list means it can be saved."""
    limit = settings.ELSA_DEFINITION_MAX_BYTES
    size = document_size(document)
    if size > limit:
        return [{"pointer": "", "message": f"the document is {size} bytes; the limit is {limit} bytes"}]
    unstorable = unstorable_problems(document)
    if unstorable:
        return unstorable
    problems = schema_problems(_document_validator(), document)
    if not isinstance(document, dict):
        return problems

    input_schema = document.get("input_schema")
    if isinstance(input_schema, dict):
        try:
            jsonschema.Draft202012Validator.check_schema(input_schema)
        except jsonschema.SchemaError as exc:
            problems.append(
                {"pointer": pointer("input_schema", *exc.absolute_path), "message": "is not a valid JSON Schema"}
            )
        else:
            problems.extend(reference_problems(input_schema, ("input_schema",)))

    raw_variables = document.get("variables")
    variables: list = raw_variables if isinstance(raw_variables, list) else []
    declared: set[str] = set()
    for index, variable in enumerate(variables):
        name = variable.get("name") if isinstance(variable, dict) else None
        if isinstance(name, str):
            if name in declared:
                problems.append({"pointer": pointer("variables", index, "name"), "message": "duplicate variable name"})
            declared.add(name)

    raw_activities = document.get("activities")
    activities: list = raw_activities if isinstance(raw_activities, list) else []
    nodes: dict[str, dict] = {}
    for index, node in enumerate(activities):
        if not isinstance(node, dict):
            continue
        activity_id, type_name = node.get("id"), node.get("type")
        if isinstance(activity_id, str):
            if activity_id in nodes:
                problems.append({"pointer": pointer("activities", index, "id"), "message": "duplicate activity id"})
            else:
                nodes[activity_id] = node
        if not isinstance(type_name, str):
            continue
        try:
            activity = get_activity(type_name)
        except UnknownActivityType:
            problems.append({"pointer": pointer("activities", index, "type"), "message": "unknown activity type"})
            continue
        prefix = ("activities", index)
        for field in activity.required_fields:
            if field not in node:
                problems.append({"pointer": pointer(*prefix, field), "message": "is required"})
        problems.extend(expression_problems(node, activity.expression_fields, prefix))
        try:
            extra = activity.validate(node)
        except Exception:  # noqa: BLE001 - a buggy plug-in validator must not turn a 400 into a 500
            extra = [("", f"the {type_name} validator failed on this activity")]
        for relative, message in extra:
            problems.append({"pointer": pointer(*prefix) + relative, "message": message})
        variable = node.get("variable")
        if type_name == "SetVariable" and isinstance(variable, str) and variable not in declared:
            problems.append({"pointer": pointer(*prefix, "variable"), "message": "is not declared in /variables"})

    raw_connections = document.get("connections")
    connections: list = raw_connections if isinstance(raw_connections, list) else []
    targets: set[str] = set()
    for index, connection in enumerate(connections):
        if not isinstance(connection, dict):
            continue
        source, target = connection.get("source"), connection.get("target")
        if isinstance(source, str) and source not in nodes:
            problems.append({"pointer": pointer("connections", index, "source"), "message": "no activity has this id"})
        if isinstance(target, str):
            if target not in nodes:
                problems.append(
                    {"pointer": pointer("connections", index, "target"), "message": "no activity has this id"}
                )
            targets.add(target)
        if isinstance(source, str) and source in nodes:
            outcome = connection.get("outcome", "Done")
            try:
                allowed = get_activity(str(nodes[source].get("type"))).node_outcomes(nodes[source])
            except (UnknownActivityType, TypeError):
                continue
            if isinstance(outcome, str) and outcome not in allowed:
                where = "outcome" if "outcome" in connection else "source"
                problems.append(
                    {
                        "pointer": pointer("connections", index, where),
                        "message": f"the source activity has no outcome {outcome!r} (it has: {', '.join(allowed)})",
                    }
                )

    if nodes:
        starts = [activity_id for activity_id in nodes if activity_id not in targets]
        if not starts:
            problems.append(
                {"pointer": "/activities", "message": "no start activity: every activity has an incoming connection"}
            )
        elif len(starts) > 1:
            problems.append(
                {
                    "pointer": "/activities",
                    "message": "more than one start activity (activities without an incoming connection): "
                    + ", ".join(starts[:10]),
                }
            )
    return problems


def start_activity(document: dict) -> str:
    """The id of the one activity without an incoming connection (validated documents have exactly one)."""
    targets = {c["target"] for c in document.get("connections", [])}
    return next(a["id"] for a in document["activities"] if a["id"] not in targets)


def input_problems(schema: dict | None, value: Any) -> list[Problem]:
    """Problems of an execute input against the definition's input_schema (values never echoed)."""
    if not schema:
        return []
    try:
        return schema_problems(json_schema_validator(schema), value, prefix=("input",))
    except RecursionError:
        # A reference cycle that never descends into the input ({"$ref": "#"}) recurses without end.
        return [{"pointer": "/input", "message": "the input schema's references loop without end"}]
