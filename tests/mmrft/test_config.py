import pytest

from mmrft.config import Config, ConfigError, describe, load_config, parse_override


def test_defaults_need_a_model():
    with pytest.raises(ConfigError, match="model.path"):
        load_config(None)


def test_yaml_and_dotted_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        "model: {tiny: tiny}\ngrpo: {beta: 0.0, steps: 7}\nrewards: [format, {name: accuracy, weight: 2}]\n"
    )
    cfg = load_config(f, ["grpo.beta=0.04", "rollout.group_size=4", "train.micro_batch_size=8"])
    assert isinstance(cfg, Config)
    assert cfg.grpo.beta == 0.04 and cfg.grpo.steps == 7
    assert cfg.rollout.group_size == 4
    assert [(r.name, r.weight) for r in cfg.rewards] == [("format", 1.0), ("accuracy", 2.0)]


def test_int_is_accepted_for_float_and_converted():
    cfg = load_config(None, ["model.tiny=tiny", "grpo.beta=1"])
    assert isinstance(cfg.grpo.beta, float) and cfg.grpo.beta == 1.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("grpo.betta=1", "unknown config field grpo.betta; allowed: steps, beta"),
        ("grpo.beta=abc", "grpo.beta: expected float, got 'abc'"),
        (
            "grpo.scale_rewards=std",
            "grpo.scale_rewards: 'std' is not allowed; choose from group, batch, none",
        ),
        (
            "grpo.loss_aggregation=mean",
            "choose from token_mean, seq_mean_token_mean, seq_mean_token_sum_norm",
        ),
        ("train.micro_batch_size=12", "train.micro_batch_size=12 must be a multiple of rollout.group_size=8"),
        ("rollout.group_size=1", "rollout.group_size: must be >= 2"),
        ("nonsense", "expected key=value"),
        ("data.video_max_frames=2", "data.video_min_frames=4 and data.video_max_frames=2: need 2 <="),
        ("data.min_pixels=0", "data.min_pixels: must be > 0, got 0"),
    ],
)
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.tiny=tiny", override])
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_parse_override_uses_yaml_types():
    assert parse_override("a.b=0.5") == ("a.b", 0.5)
    assert parse_override("a.b=true") == ("a.b", True)
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])


def test_every_field_is_documented():
    lines = describe()
    assert any(line.startswith("grpo.beta = 0.0") for line in lines)
    assert all("#" in line and line.split("#", 1)[1].strip() for line in lines)
