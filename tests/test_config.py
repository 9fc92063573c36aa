"""TOML configs with --set overrides: values, types and one-line errors."""

from dataclasses import dataclass, field

import pytest

from seqzoo.core.config import apply_overrides, from_dict, load_config, parse_value
from seqzoo.core.errors import SeqzooError
from seqzoo.models import ModelConfig


@dataclass
class Inner:
    width: int = 8
    rate: float = 0.5
    names: list[str] = field(default_factory=lambda: ["a"])
    maybe: int | None = None


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    title: str = "x"


def test_parse_value_literals():
    assert parse_value("3") == 3 and parse_value("1e-3") == 1e-3 and parse_value("true") is True
    assert parse_value('["a", "b"]') == ["a", "b"] and parse_value("plain words") == "plain words"


def test_toml_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('title = "t"\n[inner]\nwidth = 4\n')
    cfg = load_config(Outer, path, ["inner.rate=2", 'inner.names=["p", "q"]', "inner.maybe=7"])
    assert cfg == Outer(Inner(4, 2.0, ["p", "q"], 7), "t")
    assert isinstance(cfg.inner.rate, float)


@pytest.mark.parametrize("override, fragment", [
    ("inner.widht=3", "unknown key inner.widht; valid: width, rate, names, maybe"),
    ("inner.width=3.5", "inner.width: expected an integer"),
    ("inner.width=abc", "inner.width: expected an integer"),
    ("inner.names=3", "inner.names: expected a list"),
    ("nothing", "must look like section.key=value"),
    ("title.x=1", "title: expected a string"),
])
def test_bad_overrides_are_one_line_errors(override, fragment):
    with pytest.raises(SeqzooError) as err:
        load_config(Outer, None, [override])
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(SeqzooError, match="does not exist"):
        load_config(Outer, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[inner\nwidth=")
    with pytest.raises(SeqzooError, match="not valid TOML"):
        load_config(Outer, bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SeqzooError, match="not UTF-8"):
        load_config(Outer, binary)


def test_model_config_rejects_unknown_mixer_and_bad_pattern():
    with pytest.raises(SeqzooError, match="unknown mixer 'nope'.*valid: .*attention"):
        from_dict(ModelConfig, {"mixer": "nope"})
    with pytest.raises(SeqzooError, match="must divide n_layers"):
        from_dict(ModelConfig, {"mixer": ["attention"] * 3, "n_layers": 4})
    assert from_dict(ModelConfig, {"mixer": ["retention", "attention"], "n_layers": 4}).layer_mixers() == [
        "retention", "attention", "retention", "attention"]


def test_apply_overrides_does_not_mutate():
    data = {"a": {"b": 1}}
    assert apply_overrides(data, ["a.b=2"]) == {"a": {"b": 2}} and data == {"a": {"b": 1}}
