"""The config schema: valid configs load, every mistake names the key and the file."""

from pathlib import Path

import pytest

from napari_invert.config import StudyConfig, dump_config, load_config, parse_config
from napari_invert.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
ALL_SAMPLE_CONFIGS = sorted((REPO / "sample_configs").glob("*.yaml"))
#: Study configs; audit configs (a ``model:`` block: your own network) have their own schema
#: (napari_invert.audit_config, tested in tests/test_audit.py).
SAMPLE_CONFIGS = [p for p in ALL_SAMPLE_CONFIGS if "\nmodel:" not in "\n" + p.read_text(encoding="utf-8")]


def test_sample_configs_exist():
    names = {p.name for p in SAMPLE_CONFIGS}
    assert {"demo.yaml", "quick_cpu.yaml", "paper_lpba40.yaml", "full_head_ixi.yaml"} <= names


@pytest.mark.parametrize("path", SAMPLE_CONFIGS, ids=lambda p: p.name)
def test_sample_configs_validate(path):
    config = load_config(path)
    assert isinstance(config, StudyConfig)
    # every architecture the config trains is attacked with at least one tap
    for arch in config.segmenter.architectures:
        assert config.attack.taps.get(arch), f"{path.name}: {arch} has no tap"


def test_unknown_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cohort: {kind: demo}\nsegmenter: {base_filter: 8}\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    msg = str(err.value)
    assert str(bad) in msg and "segmenter.base_filter" in msg and "unknown key" in msg


def test_wrong_value_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cohort: {kind: demo}\nfolds: 1\n")
    with pytest.raises(ConfigError, match=r"folds: Input should be greater than or equal to 2"):
        load_config(bad)


def test_tap_must_fit_architecture():
    with pytest.raises(ConfigError, match="bottleneck\\+indices': unet has no pooling indices"):
        parse_config({"cohort": {"kind": "demo"}, "attack": {"taps": {"unet": ["bottleneck+indices"]}}})


def test_cohort_path_required_for_real_data():
    with pytest.raises(ConfigError, match=r"cohort\.path is required"):
        parse_config({"cohort": {"kind": "lpba40"}})


def test_invalid_yaml_and_missing_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("cohort: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_relative_cohort_path_resolves_against_config_folder(tmp_path):
    (tmp_path / "cfg").mkdir()
    cfg = tmp_path / "cfg" / "c.yaml"
    cfg.write_text("cohort: {kind: folder, path: ../cohort}\n")
    assert load_config(cfg).cohort.path == (tmp_path / "cohort").resolve()


def test_dump_roundtrip():
    config = parse_config({"cohort": {"kind": "demo", "n_subjects": 8}, "folds": 2})
    import yaml

    again = parse_config(yaml.safe_load(dump_config(config)))
    assert again == config
    assert config.multiple_of == 2**config.segmenter.levels


def test_demo_preset_matches_sample_config():
    from napari_invert.study.presets import demo_config

    assert load_config(REPO / "sample_configs" / "demo.yaml") == demo_config()
    assert demo_config(n_subjects=8).cohort.n_subjects == 8
    # the demo runs one variant; --full-head adds the paper's second axis
    assert demo_config().preprocess.variants == ["skull_stripped"]
    assert demo_config(full_head=True).preprocess.variants == ["skull_stripped", "full_head"]
