"""Config loading: strict keys with a suggestion, range checks, dotted overrides, round-trip."""

from __future__ import annotations

import pytest

from deltatune.config import dump_config, load_config
from deltatune.errors import DeltatuneError

BASE = """\
model:
  name: smollm2-135m
method:
  name: lora
  r: 8
data:
  train: builtin:orgfacts/train
train:
  lr: 2.0e-4
  batch_size: 4
output:
  dir: runs/x
"""


def write(tmp_path, text: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_valid_config_loads_with_defaults(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.method.name == "lora" and cfg.method.r == 8
    assert cfg.train.lr == 2e-4 and cfg.train.batch_size == 4
    assert cfg.data.train_on_prompt is False
    assert cfg.output.dir == "runs/x"


def test_unknown_key_names_key_and_closest_valid_one(tmp_path):
    with pytest.raises(DeltatuneError) as err:
        load_config(write(tmp_path, BASE.replace("  lr: 2.0e-4", "  lrr: 2.0e-4")))
    msg = str(err.value)
    assert "unknown key 'train.lrr'" in msg and "did you mean 'lr'" in msg
    assert "cfg.yaml" in msg


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path):
    with pytest.raises(DeltatuneError, match="valid keys here: .*warmup_steps"):
        load_config(write(tmp_path, BASE.replace("  lr: 2.0e-4", "  zzzz: 1")))


def test_unknown_method_key_suggests_method_field(tmp_path):
    with pytest.raises(DeltatuneError) as err:
        load_config(write(tmp_path, BASE.replace("  r: 8", "  rr: 8")))
    assert "method.rr" in str(err.value)
    assert "did you mean 'r'" in str(err.value)


def test_unknown_section_is_an_error(tmp_path):
    with pytest.raises(DeltatuneError, match="unknown key 'trian'.*did you mean 'train'"):
        load_config(write(tmp_path, BASE + "trian:\n  lr: 1\n"))


@pytest.mark.parametrize(
    "override, where",
    [("train.lr=0", "train.lr"), ("train.lr=-1e-4", "train.lr"), ("method.r=0", "method.r"),
     ("train.batch_size=0", "train.batch_size"), ("data.max_length=0", "data.max_length")],
)
def test_out_of_range_values_fail_at_load(tmp_path, override, where):
    with pytest.raises(DeltatuneError, match=where.replace(".", r"\.")):
        load_config(write(tmp_path, BASE), [override])


def test_dotted_overrides_parse_numbers_and_nested_keys(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["train.lr=1e-4", "method.r=16", "data.val=builtin:orgfacts/val"])
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.method.r == 16
    assert cfg.data.val == "builtin:orgfacts/val"


def test_bad_override_syntax_and_unknown_method(tmp_path):
    with pytest.raises(DeltatuneError, match="section.key=value"):
        load_config(write(tmp_path, BASE), ["train.lr"])
    with pytest.raises(DeltatuneError, match="unknown method.name 'lorax'"):
        load_config(write(tmp_path, BASE), ["method.name=lorax"])


def test_missing_required_key_and_missing_file(tmp_path):
    with pytest.raises(DeltatuneError, match="missing required key 'data.train'"):
        load_config(write(tmp_path, "data: {}\n"))
    with pytest.raises(DeltatuneError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["train.epochs=2"])
    dump_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg


def test_replay_takes_one_source_or_a_list(tmp_path):
    one = load_config(write(tmp_path, BASE), ["data.replay=builtin:general/prompts"])
    assert one.data.replay_sources() == ["builtin:general/prompts"]
    both = load_config(write(tmp_path, BASE),
                       ["data.replay=[builtin:general/prompts, builtin:orgfacts/neighbours]"])
    assert both.data.replay_sources() == ["builtin:general/prompts", "builtin:orgfacts/neighbours"]
    assert load_config(write(tmp_path, BASE)).data.replay_sources() == []
    with pytest.raises(DeltatuneError, match=r"data\.replay.*empty list"):
        load_config(write(tmp_path, BASE), ["data.replay=[]"])
