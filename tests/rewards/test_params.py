"""Reward parameters (issue 9): declared in the signature, validated against it at config load, when the
trainer's RewardStack is built, by `mmrft rewards check -p`, and by the built-ins on a direct call."""

from __future__ import annotations

import textwrap

import pytest

import rewards
from mmrft.cli import main
from mmrft.config import ConfigError, RewardSpec, load_config
from mmrft.scoring import RewardStack
from rewards.format_reward import format_reward
from rewards.params import ParamError, Range, check_value, declared


def _plugin(tmp_path, source: str, name: str = "plug") -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return f"{path}:{name}"


def test_declared_parameters_are_the_named_keywords_minus_columns():
    assert list(declared(rewards.get("iou")).params) == ["variant", "threshold", "device"]
    assert "solution" not in declared(rewards.get("chart_render")).params  # a column, even when named
    assert {"timeout_s", "workers", "element_weight"} <= set(declared(rewards.get("chart_render")).params)


@pytest.mark.parametrize(
    "spec, params, message",
    [
        ("iou", {"treshold": 0.5}, "p.treshold: unknown parameter of reward 'iou'; accepted: variant, threshold, device"),
        ("format", {"structure": "think_anwser"},
         "p.structure: 'think_anwser' is not allowed; choose from think_answer, answer_only, json, none"),
        ("iou", {"threshold": 1.5}, "p.threshold: must be in [0, 1], got 1.5"),
        ("iou", {"threshold": float("nan")}, "p.threshold: must be finite, got nan"),
        ("detection", {"max_boxes": 0}, "p.max_boxes: must be in [1, 10000], got 0"),
        ("detection", {"max_boxes": 2.5}, "p.max_boxes: expected an integer, got 2.5"),
        ("counting", {"relative_error_credit": "yes"}, "p.relative_error_credit: expected true or false, got 'yes'"),
        ("accuracy", {"synonyms": {"cat": ["kitty", 3]}}, "p.synonyms: key 'cat': expected str or a list of str"),
        ("tracking", {"solution": [{}]}, "p.solution: 'solution' is a dataset column the trainer passes"),
        ("chart_render", {"element_weight": 0.0, "visual_weight": 0.0}, "p: element_weight + visual_weight must be > 0"),
        ("chart_render", {"isolation": "off"}, "p.isolation: 'off' is not allowed; choose from auto, strict, minimal"),
    ],
)  # fmt: skip
def test_bad_params_are_one_line_errors_naming_the_parameter(spec, params, message):
    with pytest.raises(ParamError) as e:
        rewards.validate_params(spec, params, "p")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_good_params_pass_through():
    params = {
        "score": "f1",
        "iou_threshold": 0.75,
        "max_boxes": 5,
        "synonyms": {"dog": ["puppy"]},
        "device": "cpu",
    }
    assert rewards.validate_params("detection", params) == params
    assert rewards.validate_params("iou", {"threshold": 1}) == {"threshold": 1}  # an int is a number
    assert rewards.validate_params("chart_render", {"timeout_s": 2.5, "extra_ro_paths": ["/opt"]})


def test_plugins_get_the_same_checks_from_their_annotations(tmp_path):
    spec = _plugin(
        tmp_path,
        """
        from typing import Annotated, Literal
        from rewards.params import Range

        def plug(completions, mode: Literal["a", "b"] = "a", scale: Annotated[float, Range(0, lo_open=True)] = 1.0,
                 keyword: str = "x", **columns):
            return [1.0 for _ in completions]
        """,
    )
    assert rewards.validate_params(spec, {"mode": "b", "scale": 2}) == {"mode": "b", "scale": 2}
    with pytest.raises(ValueError, match=r"params.scale: must be > 0, got 0"):
        rewards.validate_params(spec, {"scale": 0})
    with pytest.raises(ValueError, match=r"params.mode: 'c' is not allowed; choose from a, b"):
        rewards.validate_params(spec, {"mode": "c"})
    with pytest.raises(
        ValueError, match=r"params.kw: unknown parameter of reward 'plug'; accepted: mode, scale, keyword"
    ):
        rewards.validate_params(spec, {"kw": "y"})


def test_a_plugin_without_named_parameters_takes_none_and_required_ones_must_be_given(tmp_path):
    legacy = _plugin(
        tmp_path, "def old(completions, **kwargs):\n    return [0.0] * len(completions)\n", "old"
    )
    with pytest.raises(
        ValueError, match=r"params.threshold: unknown parameter of reward 'old'; accepted: none"
    ):
        rewards.validate_params(legacy, {"threshold": 0.5})
    needs = _plugin(
        tmp_path, "def req(completions, word, **columns):\n    return [0.0] * len(completions)\n", "req"
    )
    with pytest.raises(
        ValueError, match=r"params.word: reward 'req' needs this parameter \(it has no default\)"
    ):
        rewards.validate_params(needs, {})
    assert rewards.validate_params(needs, {"word": 3}) == {"word": 3}  # unannotated: any value


def test_builtins_check_their_own_arguments_on_a_direct_call():
    with pytest.raises(ParamError, match=r"^format.structure: 'xml' is not allowed"):
        format_reward(["<answer>x</answer>"], structure="xml")
    with pytest.raises(ParamError, match=r"^iou.threshold: must be in \[0, 1\], got -1"):
        rewards.get("iou")(["[1, 2, 3, 4]"], solution=[{"box": [1, 2, 3, 4]}], threshold=-1)


def test_check_value_covers_the_annotation_forms():
    from typing import Annotated, Any, Literal

    assert check_value(True, bool) is None and check_value(1, bool) == "expected true or false, got 1"
    assert check_value(True, int) == "expected an integer, got True"
    assert (
        check_value(10**400, float) is None and check_value(float("inf"), float) == "must be finite, got inf"
    )
    assert check_value(("a", "b"), tuple[str, ...]) is None and check_value(["a", 1], list[str]) == (
        "item 1: expected a string, got 1"
    )
    assert check_value(1, Literal[True]) == "1 is not allowed; choose from True"  # type-exact
    assert check_value(5, Annotated[int, Range(1, 4)]) == "must be in [1, 4], got 5"
    assert check_value(object(), Any) is None and check_value(3, "Unresolved") is None


# ------------------------------------------------------------------------------ where it is wired


def _config(tmp_path, rewards_yaml: str):
    path = tmp_path / "c.yaml"
    path.write_text(f"model: {{tiny: tiny}}\nrewards: {rewards_yaml}\n")
    return load_config(path)


@pytest.mark.parametrize(
    "rewards_yaml, message",
    [
        ("[{name: iou, params: {treshold: 0.5}}]",
         "rewards[0].params.treshold: unknown parameter of reward 'iou'; accepted: variant, threshold, device"),
        ("[format, {name: format, params: {structure: think_anwser}}]",
         "rewards[1].params.structure: 'think_anwser' is not allowed; choose from think_answer, answer_only, json, none"),
        ("[acuracy]", "rewards[0].name: unknown reward 'acuracy'; available: accuracy,"),
    ],
)  # fmt: skip
def test_config_load_rejects_bad_reward_params(tmp_path, rewards_yaml, message):
    with pytest.raises(ConfigError) as e:
        _config(tmp_path, rewards_yaml)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_config_load_accepts_good_reward_params(tmp_path):
    cfg = _config(
        tmp_path, "[{name: iou, params: {threshold: 0.5}}, {name: format, params: {structure: json}}]"
    )
    assert [r.params for r in cfg.rewards] == [{"threshold": 0.5}, {"structure": "json"}]


def test_reward_stack_checks_params_built_in_code_too():
    with pytest.raises(ValueError, match=r"rewards\[1\].params.treshold: unknown parameter of reward 'iou'"):
        RewardStack([RewardSpec("format", 1.0, {}), RewardSpec("iou", 1.0, {"treshold": 0.5})])


def test_cli_check_rejects_unknown_and_bad_params(capsys):
    assert main(["rewards", "check", "iou", "-p", "treshold=0.5"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "error: --param treshold: unknown parameter of reward 'iou'; accepted: variant, threshold, device\n"
    )
    assert main(["rewards", "check", "format", "-p", "structure=think_anwser"]) == 2
    assert "error: --param structure: 'think_anwser' is not allowed" in capsys.readouterr().err
