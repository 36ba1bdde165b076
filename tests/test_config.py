"""Config loading: strict keys with a suggestion, range checks, dotted overrides, round-trip."""

from __future__ import annotations

import pytest
import yaml

from deltatune.config import apply_override, dump_config, load_config, validate_config
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


def config_error(raw: dict, *overrides: str) -> str:
    """The DeltatuneError text for `raw` with dotted overrides applied."""
    for item in overrides:
        apply_override(raw, item)
    with pytest.raises(DeltatuneError) as err:
        validate_config(raw)
    return str(err.value)


def base_raw() -> dict:
    return yaml.safe_load(BASE)


@pytest.mark.parametrize(
    "name, key",
    [("learning_rate", "train.lr"), ("num_train_epochs", "train.epochs"),
     ("per_device_train_batch_size", "train.batch_size"), ("micro_batch_size", "train.batch_size"),
     ("gradient_accumulation_steps", "train.grad_accum"), ("lr_scheduler_type", "train.schedule"),
     ("save_total_limit", "train.keep_checkpoints"), ("adam_beta1", "train.betas"),
     ("lora_r", "method.r"), ("lora_rank", "method.r"), ("lora_alpha", "method.alpha"),
     ("lora_target", "method.targets"), ("target_modules", "method.targets"),
     ("cutoff_len", "data.max_length"), ("max_seq_length", "data.max_length"),
     ("sequence_len", "data.max_length"), ("model_name_or_path", "model.name"),
     ("output_dir", "output.dir"), ("train_on_inputs", "data.train_on_prompt"), ("stage", "recipe")],
)
@pytest.mark.parametrize("section", ["", "train"])
def test_foreign_key_names_the_deltatune_key(name, key, section):
    where = f"{section}.{name}" if section else name
    msg = config_error(base_raw(), f"{where}=1")
    assert f"unknown key '{where}' — deltatune calls this '{key}' (" in msg
    assert "did you mean" not in msg


def test_foreign_key_in_its_own_section_says_whose_name_it_is():
    msg = config_error(base_raw(), "train.learning_rate=1e-4")
    assert "unknown key 'train.learning_rate' — deltatune calls this 'train.lr' (Hugging Face Trainer" in msg
    assert "LLaMA-Factory" in msg
    msg = config_error(base_raw(), "method.lora_alpha=32")
    assert "'method.lora_alpha' — deltatune calls this 'method.alpha'" in msg


def test_warmup_steps_is_placed_at_top_level_and_valid_under_train():
    msg = config_error(base_raw(), "warmup_steps=10")
    assert "unknown key 'warmup_steps' — it belongs in the 'train' section: 'train.warmup_steps'" in msg
    raw = base_raw()
    apply_override(raw, "train.warmup_steps=10")
    assert validate_config(raw).train.warmup_steps == 10


def test_keys_without_an_equivalent_say_what_to_do_instead():
    msg = config_error(base_raw(), "train.warmup_ratio=0.1")
    assert "no equivalent" in msg and "train.warmup_steps" in msg
    assert "chat template" in config_error(base_raw(), "data.template=llama3")
    assert "model.dtype: bfloat16" in config_error(base_raw(), "bf16=true")


def test_top_level_key_of_a_section_says_which_section():
    assert "it belongs in the 'train' section: 'train.lr'" in config_error(base_raw(), "lr=1e-4")
    assert "'data.max_length'" in config_error(base_raw(), "train.max_length=128")
    msg = config_error(base_raw(), "batch_size=4")  # a key of train and of eval
    assert "'train.batch_size' or 'eval.batch_size'" in msg
    assert "it is a top-level key: 'recipe'" in config_error(base_raw(), "train.recipe=pt")


def test_misspelt_key_suggests_only_a_key_of_its_own_section():
    msg = config_error(base_raw(), "train.lrr=1e-4")
    assert "unknown key 'train.lrr' — did you mean 'lr'?" in msg
    msg = config_error(base_raw(), "data.epochz=2")  # close to train.epochs, but data has no such key
    assert "did you mean 'epochs'" not in msg and "valid keys here: train, val" in msg
    msg = config_error(base_raw(), "method.rr=8")
    assert "unknown key 'method.rr' — did you mean 'r'?" in msg


def test_method_key_of_another_method_names_the_method_that_has_it():
    raw = base_raw()
    raw["method"] = {"name": "full"}
    msg = config_error(raw, "method.lora_r=8")
    assert "deltatune calls this 'method.r'" in msg and "method.name: lora" in msg


def test_union_tags_in_error_locations_are_not_shown():
    """pydantic puts a union tag ('lora', 'LoraConfig') into `method` locations; it is no key."""
    from pydantic import ValidationError

    from deltatune import config

    raw = base_raw()
    raw["method"]["rr"] = 8
    for tag in ("lora", "LoraConfig"):
        err = ValidationError.from_exception_data(
            "Config", [{"type": "extra_forbidden", "loc": ("method", tag, "rr"), "input": 8}])
        assert "unknown key 'method.rr' — did you mean 'r'?" in config._explain(err, raw, "cfg")
