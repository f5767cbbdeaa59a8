"""Config strictness: repeated YAML keys, invalid YAML and out-of-range values are ConfigErrors naming the
line or field and the allowed range; arbitrary YAML trees and override strings give a Config or a
ConfigError, never another exception (property-based, hypothesis)."""

import dataclasses
import tempfile
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmrft.config import Config, ConfigError, describe, load_config


def _write(text: str) -> Path:
    f = Path(tempfile.mkdtemp()) / "c.yaml"
    f.write_text(text, encoding="utf-8")
    return f


def test_a_repeated_key_is_an_error_naming_it_and_both_lines():
    f = _write("model:\n  tiny: tiny\ntrain:\n  lr: 1.0e-5\n  seed: 1\n  lr: 1.0e-3\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert str(e.value) == f"config file '{f}': duplicate key 'lr' at line 6 (first given at line 4)"


def test_repeats_are_found_in_flow_mappings_lists_and_overrides():
    with pytest.raises(ConfigError, match=r"duplicate key 'name' at line 2 \(first given at line 2\)"):
        load_config(_write("model: {tiny: tiny}\nrewards: [{name: format, name: accuracy}]\n"))
    with pytest.raises(
        ConfigError, match=r"^override 'rewards=\[\{name: a, name: b\}\]': duplicate key 'name'"
    ):
        load_config(None, ["model.tiny=tiny", "rewards=[{name: a, name: b}]"])


def test_yaml_merge_keys_may_be_overridden():
    cfg = load_config(_write("model: {tiny: tiny}\ngrpo:\n  <<: {beta: 0.1, steps: 3}\n  steps: 5\n"))
    assert cfg.grpo.beta == 0.1 and cfg.grpo.steps == 5


def test_invalid_yaml_names_the_line():
    f = _write("model: {tiny: tiny}\ngrpo:\n  beta: 0.1\n   steps: 2\n")
    with pytest.raises(ConfigError, match=rf"^config file '{f}': invalid YAML at line 4, column \d+: "):
        load_config(f)
    with pytest.raises(ConfigError, match=r"invalid YAML"):
        load_config(_write("model: !!python/object:os.system {}\n"))  # the safe loader's refusal, one line


@pytest.mark.parametrize(
    "override, message",
    [
        ("rollout.temperature=-1", "rollout.temperature: must be >= 0, got -1.0"),
        ("rollout.top_p=0", "rollout.top_p: must be in (0, 1], got 0.0"),
        ("rollout.top_p=1.01", "rollout.top_p: must be in (0, 1], got 1.01"),
        ("grpo.steps=-3", "grpo.steps: must be >= 0, got -3"),
        ("train.lr=-1e-5", "train.lr: must be >= 0, got -1e-05"),
        ("sft.batch_size=0", "sft.batch_size: must be >= 1, got 0"),
        ("grpo.epsilon_low=1", "grpo.epsilon_low: must be in [0, 1), got 1.0"),
        ("grpo.epsilon_high=-0.1", "grpo.epsilon_high: must be >= 0, got -0.1"),
        ("grpo.beta=-0.04", "grpo.beta: must be >= 0, got -0.04"),
        ("train.max_bad_steps=-1", "train.max_bad_steps: must be >= 0, got -1"),
        ("rewards=[{name: accuracy, timeout_s: -2}]", "rewards[0].timeout_s: must be >= 0, got -2.0"),
        ("watchdog.eval_s=-1", "watchdog.eval_s: must be >= 0, got -1.0"),
        ("distributed.timeout_s=0", "distributed.timeout_s: must be > 0, got 0.0"),
        ("train.seed=-1", "train.seed: must be in [0, 4294967295], got -1"),
        ("train.lr=.nan", "train.lr: must be a finite number, got nan"),
        ("train.lr=1e999", "train.lr: must be a finite number, got inf"),
        (f"grpo.beta={'9' * 400}", "grpo.beta: " + "9" * 400 + " is too large for a float"),
        ("train.adam_betas=[0.9, 1.5]", "train.adam_betas: expected two numbers in [0, 1), got [0.9, 1.5]"),
        ("rewards=[{name: iou, params: {1: 2}}]", "rewards[0].params: keys must be strings, got 1"),
        ("=3", "expected a dotted field name before '='"),
        ("grpo..beta=3", "expected a dotted field name before '='"),
    ],
)
def test_out_of_range_values_name_the_field_and_the_range(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.tiny=tiny", override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_edges_of_ranges_are_allowed():
    cfg = load_config(None, ["model.tiny=tiny", "rollout.temperature=0", "rollout.top_p=1", "grpo.epsilon_low=0",
                             "train.max_bad_steps=0", "rewards=[{name: accuracy, timeout_s: 0}]", "sft.lr=0"])  # fmt: skip
    assert cfg.rollout.temperature == 0.0 and cfg.rewards[0].timeout_s == 0.0


def test_help_config_shows_ranges():
    lines = describe()
    assert any(line.startswith("rollout.top_p = 1.0 (in (0, 1])  #") for line in lines)
    assert any(line.startswith("rewards[i].timeout_s = 600.0 (>= 0)  #") for line in lines)


# ---- property-based: anything in, a Config or a ConfigError out ------------------------------------------


def _fields(cls=Config, prefix=""):
    """Every dotted leaf field of the config (rewards items as rewards)."""
    out = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out += _fields(tp, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


FIELDS = _fields()
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True) | text
)  # fmt: skip
trees = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            text | st.integers() | st.sampled_from(FIELDS + ["model", "grpo", "rewards"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


def _loads_or_config_error(path=None, overrides=None):
    try:
        assert isinstance(load_config(path, overrides), Config)
    except ConfigError as e:
        assert "\n" not in str(e)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(tree=trees)
def test_any_yaml_tree_gives_a_config_or_a_config_error(tree):
    _loads_or_config_error(_write(yaml.safe_dump(tree, allow_unicode=True)))


@SETTINGS
@given(field=st.sampled_from(FIELDS), value=trees)
def test_any_value_in_any_field_gives_a_config_or_a_config_error(field, value):
    tree = {"model": {"tiny": "tiny"}}
    node = tree
    *parents, leaf = field.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    _loads_or_config_error(_write(yaml.safe_dump(tree, allow_unicode=True)))


@SETTINGS
@given(
    raw=st.text(max_size=80).filter(lambda s: "\x00" not in s)
    | st.text(alphabet="{}[]:,-&*!|>'\"#%@` \n\tab1.", max_size=60)
)
def test_any_file_text_gives_a_config_or_a_config_error(raw):
    _loads_or_config_error(_write(raw))


@SETTINGS
@given(override=st.text(max_size=60), key=st.sampled_from(FIELDS), raw=st.text(max_size=30))
def test_any_override_gives_a_config_or_a_config_error(override, key, raw):
    _loads_or_config_error(None, ["model.tiny=tiny", override])
    _loads_or_config_error(None, ["model.tiny=tiny", f"{key}={raw}"])
