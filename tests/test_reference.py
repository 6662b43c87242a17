import dataclasses
from dataclasses import dataclass

import pytest

from rfcn import reference
from rfcn.cli import TOOL_MODULES, build_parser


def test_every_config_field_has_a_description_and_a_row() -> None:
    assert reference.undocumented_fields() == []
    text = reference.config_reference()
    for section, cls in reference.SECTIONS.items():
        for item in dataclasses.fields(cls):
            assert f"| `{section}.{item.name}` |" in text, f"{section}.{item.name} missing"
    assert "| `model.k` | `int` | `7` | k x k position-sensitive bins (paper §2)" in text


@dataclass
class _Documented:
    described: int = 1
    """What it is."""
    bare: int = 2


def test_a_field_without_a_docstring_fails_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    assert reference.attribute_docstrings(_Documented) == {"described": "What it is."}
    monkeypatch.setitem(reference.SECTIONS, "extra", _Documented)
    assert reference.undocumented_fields() == ["extra.bare"]
    with pytest.raises(ValueError, match=r"config fields without a docstring: extra\.bare"):
        reference.config_reference()


def test_every_subcommand_and_flag_is_in_the_cli_reference() -> None:
    text = reference.cli_reference()
    subcommands = reference._subcommands(build_parser())
    assert set(subcommands) == set(TOOL_MODULES)
    for name, parser in subcommands.items():
        assert f"## `rfcn {name}`" in text
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in text or f", {flag}" in text, f"rfcn {name} {flag}"


def test_error_reference_lists_the_messages_with_their_placeholders() -> None:
    messages = reference.error_messages()
    assert ("{path}", "config file not found") in messages["rfcn.config"]
    assert ("train.warmup_iters", "must be >= 0, got {cfg.train.warmup_iters}") in messages[
        "rfcn.config"
    ]
    assert "### `rfcn.config`" in reference.error_reference()
    # a UserError subclass's own message
    assert (
        "iteration {iteration}",
        "loss is {loss}: training diverged; lower train.base_lr or set train.max_grad_norm",
    ) in messages["rfcn.errors"]
