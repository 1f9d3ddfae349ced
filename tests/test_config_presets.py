"""The moses preset is the bundled recipe and the config defaults; thread choice."""

import os

import pytest

from molvae.config import (
    PRESETS,
    ConfigError,
    ModelConfig,
    TrainConfig,
    UsageError,
    auto_threads,
    from_dict,
    load_config_file,
    load_preset,
    parse_threads,
    usable_cores,
)


def test_moses_preset_equals_the_defaults():
    model, train = load_preset("moses")
    assert from_dict(ModelConfig, model) == ModelConfig()
    assert from_dict(TrainConfig, train) == TrainConfig()


def test_preset_by_bare_name_and_typo(tmp_path):
    assert load_config_file("moses") == load_preset("moses")
    with pytest.raises(ConfigError, match="did you mean 'moses'"):
        load_preset("mosse")
    with pytest.raises(ConfigError, match="presets: moses"):
        load_config_file(tmp_path / "nope")
    assert "moses" in PRESETS


def test_parse_threads():
    assert parse_threads("3") == 3
    assert 1 <= parse_threads("auto") <= usable_cores()
    assert 1 <= parse_threads(None) <= usable_cores()
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(UsageError, match="--threads"):
            parse_threads(bad)


def test_auto_threads_leaves_busy_cores(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert auto_threads() == 3
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert auto_threads() == 1


def test_gpu_preset_is_the_moses_recipe_with_a_deeper_decoder():
    model, train = load_preset("moses_gpu")
    base_model, base_train = load_preset("moses")
    assert train == base_train
    assert model["dec_layers"] == 2
    assert {k: v for k, v in model.items() if k != "dec_layers"} == \
        {k: v for k, v in base_model.items() if k != "dec_layers"}
    assert from_dict(ModelConfig, model).dec_layers == 2


def test_a_config_file_can_extend_a_preset(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('extends = "moses"\n[train]\nbatch_size = 64\n')
    model, train = load_config_file(f)
    base_model, base_train = load_preset("moses")
    assert model == base_model and train == {**base_train, "batch_size": 64}
    f.write_text('extends = "mosse"\n')
    with pytest.raises(ConfigError, match="did you mean 'moses'"):
        load_config_file(f)
    f.write_text('[modle]\n')
    with pytest.raises(ConfigError, match="unknown table"):
        load_config_file(f)
