"""Schemas a grammar can and cannot enforce; conversion never loosens silently."""

from __future__ import annotations

from typing import Any

import pytest

from agents.models.chat_format import (
    EMBEDDED_TEMPLATE,
    choose_chat_format,
    fold_system_messages,
    llama_chat_format_argument,
)
from agents.models.errors import ChatTemplateMissing, SchemaNotConvertible
from agents.models.grammar import check_schema, schema_to_grammar

PLAN_LIKE: dict[str, Any] = {
    "type": "object",
    "title": "Plan",
    "description": "annotations are fine",
    "properties": {
        "stars": {
            "type": "array",
            "minItems": 1,
            "maxItems": 8,
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "pattern": "^[a-z]{1,8}$"},
                    "tool": {"enum": ["shell.run", "fs.read"]},
                    "after": {"type": "array", "items": {"$ref": "#/$defs/Id"}},
                    "note": {"anyOf": [{"type": "string", "maxLength": 80}, {"type": "null"}]},
                },
                "required": ["id", "tool"],
                "additionalProperties": False,
            },
        },
        "kind": {"const": "plan"},
    },
    "required": ["stars"],
    "$defs": {"Id": {"type": "string", "enum": ["a", "b"]}},
}


def test_an_enforceable_schema_passes_and_converts() -> None:
    check_schema(PLAN_LIKE)
    grammar = schema_to_grammar(PLAN_LIKE)
    assert "root ::=" in grammar
    assert '\\"shell.run\\"' in grammar  # the enum became literal alternatives


@pytest.mark.parametrize(
    ("schema", "where", "needle"),
    [
        ({"type": "array", "uniqueItems": True}, "#", "uniqueItems"),
        ({"type": "number", "maximum": 3}, "#", "maximum"),
        ({"type": "integer", "multipleOf": 2}, "#", "multipleOf"),
        ({"type": "object", "patternProperties": {}}, "#", "patternProperties"),
        ({"type": "object", "minProperties": 1}, "#", "minProperties"),
        ({"type": "array", "contains": {"type": "string"}}, "#", "contains"),
        ({"if": {}, "then": {}}, "#", "if"),
        ({"properties": {"a": {"type": "strnig"}}}, "#/properties/a", "unknown type"),
        ({"type": "string", "format": "email"}, "#", "format 'email'"),
        ({"type": "string", "pattern": "^a+$", "maxLength": 4}, "#", "keeps only the pattern"),
        ({"type": ["string", "null"], "enum": ["a", None]}, "#", "list of types"),
        ({"anyOf": [{"type": "string"}], "minLength": 2}, "#", "keeps only the union"),
        ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "#", "use anyOf"),
        ({"$defs": {"X": {"type": "integer", "minimum": 0}}}, "#/$defs/X", "minimum"),
        ({"items": {"items": {"exclusiveMinimum": 1}}}, "#/items/items", "exclusiveMinimum"),
        ({"type": "object", "discriminator": {"propertyName": "t"}}, "#", "discriminator"),
        ([1, 2], "#", "must be an object"),
    ],
)
def test_what_the_grammar_would_ignore_is_refused_with_its_place(
    schema: Any, where: str, needle: str
) -> None:
    with pytest.raises(SchemaNotConvertible) as refused:
        check_schema(schema)
    assert refused.value.where == where
    assert needle in str(refused.value)


def test_boolean_subschemas_are_fine() -> None:
    check_schema({"type": "object", "properties": {}, "additionalProperties": False})


def test_a_configured_chat_format_wins() -> None:
    assert choose_chat_format(architecture="llama", chat_template="{{x}}", configured="chatml") == (
        "chatml"
    )


def test_the_files_own_template_is_used_when_present() -> None:
    chosen = choose_chat_format(architecture="llama", chat_template="{% for m in messages %}")
    assert chosen == EMBEDDED_TEMPLATE
    assert llama_chat_format_argument(chosen) is None


def test_a_gemma_file_without_template_gets_the_gemma_format_not_llama2() -> None:
    chosen = choose_chat_format(architecture="gemma3", chat_template=None)
    assert chosen == "gemma"
    assert llama_chat_format_argument(chosen) == "gemma"


def test_an_unknown_architecture_without_template_is_an_error_not_a_guess() -> None:
    with pytest.raises(ChatTemplateMissing) as missing:
        choose_chat_format(architecture="rwkv6", chat_template="  ", path="/m/x.gguf")
    assert "rwkv6" in str(missing.value)
    assert "chat_format" in str(missing.value)


def test_system_messages_are_folded_into_the_first_user_turn_for_gemma() -> None:
    chat = [
        {"role": "system", "content": "Tools: a, b."},
        {"role": "user", "content": "Do it."},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "Again."},
    ]
    assert fold_system_messages(chat, "gemma") == [
        {"role": "user", "content": "Tools: a, b.\n\nDo it."},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "Again."},
    ]
    assert fold_system_messages(chat, None) == chat  # templates with a system role keep it
    assert fold_system_messages(chat[:1], "gemma") == [{"role": "user", "content": "Tools: a, b."}]


def test_strings_admit_control_characters_only_escaped() -> None:
    # JSON forbids a raw newline inside a string; the converter's own rule allowed one,
    # so a model could emit output that parses only with json.loads(strict=False).
    from llama_cpp import LlamaGrammar

    grammar = schema_to_grammar(
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    )
    char_rules = [line for line in grammar.splitlines() if line.startswith("char ::=")]
    assert char_rules == [
        'char ::= [^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F] '
        "[0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])"
    ]
    assert LlamaGrammar.from_string(grammar, verbose=False) is not None  # llama.cpp parses it


def test_excluded_characters_cannot_appear_in_strings() -> None:
    from llama_cpp import LlamaGrammar

    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    grammar = schema_to_grammar(schema, exclude="$")
    assert 'char ::= [^"\\\\$\\x7F\\x00-\\x1F] |' in grammar
    assert LlamaGrammar.from_string(grammar, verbose=False) is not None
    with pytest.raises(ValueError, match="cannot exclude"):
        schema_to_grammar(schema, exclude="]")
