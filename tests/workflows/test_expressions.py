"""CEL expressions: compiled once, bounded in size, failures reported with the expression."""

import pytest

from workflows.expressions import ExpressionError, compile_expression, evaluate_expression, to_json_value

CONTEXT = {"input": {"amount": 1200, "items": [1, 2, 3]}, "vars": {"name": "Ada"}, "outputs": {"a": {"ok": True}}}


def test_evaluates_over_input_vars_and_outputs():
    assert evaluate_expression("input.amount > 1000 && vars.name == 'Ada' && outputs.a.ok", CONTEXT) is True
    assert evaluate_expression("{'total': input.items.map(x, x * 2)}", CONTEXT) == {"total": [2, 4, 6]}


def test_compiled_programs_are_cached_by_text():
    assert compile_expression("1 + 2") is compile_expression("1 + 2")


def test_syntax_error_is_an_expression_error():
    with pytest.raises(ExpressionError) as error:
        compile_expression("input.amount >")
    assert error.value.expression == "input.amount >"


def test_length_and_comprehension_limits_bound_the_cost(settings):
    settings.ELSA_EXPRESSION_MAX_LENGTH = 10
    with pytest.raises(ExpressionError, match="longer than 10"):
        compile_expression("1 + 1 + 1 + 1")
    settings.ELSA_EXPRESSION_MAX_LENGTH = 2000
    settings.ELSA_EXPRESSION_MAX_COMPREHENSIONS = 2
    nested = "input.items.map(x, input.items.map(y, input.items.map(z, x * y * z)))"
    with pytest.raises(ExpressionError, match="more than 2 comprehension"):
        compile_expression(nested)


@pytest.mark.parametrize(
    "source",
    [
        # A comment between the dot and the macro's name hid it from the count.
        "input.items.//\nall(a, input.items.//\nall(b, input.items.//\nall(c, true)))",
        "input.items.map(x, x) // a comment\n.map(y, y).filter(z, z > 0)",
        "input.items.map(x, '//').map(y, y).all(z, true)",
    ],
)
def test_every_comprehension_macro_counts_whatever_comments_surround_it(settings, source):
    settings.ELSA_EXPRESSION_MAX_COMPREHENSIONS = 2
    with pytest.raises(ExpressionError, match="more than 2 comprehension"):
        compile_expression(source)


def test_macro_names_in_strings_and_comments_do_not_count(settings):
    settings.ELSA_EXPRESSION_MAX_COMPREHENSIONS = 1
    source = (
        r"""input.items.map(x, x).size() + [".map(", '.all(\'', r'\', '''.filter(''', b'.exists('].size() // .map("""
    )
    compile_expression(source)


def test_runtime_errors_name_the_failure():
    with pytest.raises(ExpressionError, match="division"):
        evaluate_expression("input.amount / 0", CONTEXT)
    with pytest.raises(ExpressionError):
        evaluate_expression("vars.missing + 1", CONTEXT)


def test_python_is_never_evaluated():
    with pytest.raises(ExpressionError):
        evaluate_expression("__import__('os').system('true')", CONTEXT)


def test_results_are_converted_to_json():
    assert evaluate_expression("timestamp('2024-01-01T00:00:00Z')", {}) == "2024-01-01T00:00:00+00:00"
    assert evaluate_expression("duration('90s')", {}) == 90.0
    assert to_json_value(b"ab") == "YWI="


def test_only_the_names_an_expression_reads_are_converted():
    # Every name handed to CEL is converted to a CEL value first; a value it cannot convert (here a
    # Python object) fails any evaluation that is given it. Names the expression does not read are
    # not handed over, so they cost nothing and cannot fail it.
    context = {**CONTEXT, "outputs": {"opaque": object()}}
    assert evaluate_expression("vars.name + '!'", context) == "Ada!"
    assert evaluate_expression("input.items.map(x, x * input.amount)", context) == [1200, 2400, 3600]
    assert evaluate_expression("'outputs'", context) == "outputs"  # a string, not a reference
    with pytest.raises(ExpressionError, match="Conversion"):
        evaluate_expression("has(outputs.opaque)", context)
    with pytest.raises(ExpressionError):
        evaluate_expression("secrets.key", context)  # a name the context lacks is still an error
