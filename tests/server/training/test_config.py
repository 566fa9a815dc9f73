"""Declarative configs: shipped names, inheritance, --set overrides, and errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from nptface.server.training.config import ConfigError, HeadSection, load_config, shipped_configs


def test_shipped_configs_carry_the_paper_recipe():
    assert {"synthetic-quick", "casia-mobilefacenet-npt", "ms1m-mobilefacenet-npt", "real-faces"} <= set(
        shipped_configs()
    )
    casia = load_config("casia-mobilefacenet-npt", ['data.path="/data/casia/train"'])
    assert (casia.optim.epochs, casia.optim.batch_size, casia.optim.milestones) == (65, 64, [30.0, 45.0])
    assert (casia.optim.lr, casia.optim.momentum, casia.optim.nesterov) == (0.1, 0.9, True)
    assert (
        casia.optim.weight_decay_proxies,
        casia.optim.weight_decay_embedding,
        casia.optim.weight_decay_backbone,
    ) == (5e-4, 1e-4, 1e-5)
    assert casia.head.name == "npt"
    assert casia.head.params == {"k": 6, "delta": 1.0, "r": 1.0, "negatives": "semihard"}
    assert (casia.model.width, casia.model.input_size, casia.model.embedding_dim) == (1.0, 112, 256)
    ms1m = load_config("ms1m-mobilefacenet-npt", ['data.path="/data/ms1m/train"'])
    assert (ms1m.optim.epochs, ms1m.optim.batch_size, ms1m.optim.milestones) == (21, 512, [10.0, 18.0])


def test_a_user_config_inherits_a_shipped_base_and_overrides_win(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('base = "synthetic-quick"\n[optim]\nlr = 0.05\n[head]\nname = "arcface"\nparams = { s = 32.0 }\n')
    config = load_config(str(path), ["optim.lr=0.02", "optim.milestones=[2.0, 3.0]"])
    assert config.optim.lr == 0.02 and config.optim.milestones == [2.0, 3.0]
    assert config.head.name == "arcface" and config.head.params == {"s": 32.0}, "params replace, not merge"
    assert config.model.width == 0.5 and config.optim.momentum == 0.9, "inherited through two levels"


def test_inheritance_loops_are_reported(tmp_path):
    (tmp_path / "a.toml").write_text('base = "b.toml"\n')
    (tmp_path / "b.toml").write_text('base = "a.toml"\n')
    with pytest.raises(ConfigError, match="loops"):
        load_config(str(tmp_path / "a.toml"))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["optim.lrr=0.1"], r"unknown key\(s\) \['lrr'\]"),
        (['optim.lr="fast"'], "optim.lr must be a finite number"),
        (["optim.epochs=2.5"], "optim.epochs must be an integer"),
        (['data.kind="parquet"'], "data.kind must be synthetic, imagefolder or recordio"),
        (['data.kind="imagefolder"'], "data.path is required"),
        (["optim.milestones=[100.0]"], "milestones"),
        (['eval.sets=[{kind="bin"}]'], r"eval.sets\[0\].path is required"),
        (["optim"], "section.key=value"),
        (["optim..lr=0.1"], "empty key"),
        (["head.shard_proxies=1"], 'head.shard_proxies must be "auto", true or false'),
        (['head.name="arcface"', "head.params={}", "head.shard_proxies=true"], "shard_proxies = true needs"),
        (["head.candidate_rate=0.1", "head.shard_proxies=true"], "shard_proxies = true needs"),
        (["head.shard_proxies=true"], r'head.shard_proxies = true needs head.params.negatives = "hardest"'),
        (["device.cpu_threads=-1"], r"device.cpu_threads must be >= 0 \(0 = the idle cores\), got -1"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("synthetic-quick", overrides)


def test_unknown_config_names_list_the_shipped_ones():
    with pytest.raises(ConfigError, match="synthetic-quick"):
        load_config("imagenet")


def test_overrides_set_nested_values_parsed_as_toml():
    config = load_config(
        "synthetic-quick",
        ["head.name=arcface", "head.params={s = 32.0}", "log.tensorboard=true", "optim.milestones=[1.0]"],
    )
    assert config.head.name == "arcface" and config.head.params == {"s": 32.0}
    assert config.log.tensorboard is True and config.optim.milestones == [1.0]


def test_config_hash_ignores_names_and_logging_but_not_the_recipe():
    base = load_config("synthetic-quick")
    assert load_config("synthetic-quick", ['run.name="other"', "log.every_steps=5"]).hash() == base.hash()
    assert load_config("synthetic-quick", ["optim.lr=0.2"]).hash() != base.hash()
    assert load_config("synthetic-quick", ["run.seed=1"]).hash() != base.hash()
    # Like the number of processes: a checkpoint resumes sharded or not.
    assert load_config("synthetic-quick", ["head.shard_proxies=false"]).hash() == base.hash()
    assert load_config("synthetic-quick", ["optim.sparse_proxies=false"]).hash() == base.hash()
    assert load_config("synthetic-quick", ["optim.sparse_proxies=true"]).hash() != base.hash()


def test_switching_the_head_by_set_gives_the_new_heads_defaults_not_the_old_params():
    config = load_config("synthetic-quick", ['head.name="arcface"'])
    assert config.head.name == "arcface" and config.head.params == {"s": 64.0, "m": 0.5}
    assert load_config("synthetic-quick", ['head.name="cosface"', "head.params.m=0.4"]).head.params == {"m": 0.4}
    npt = {"k": 6, "delta": 1.0, "r": 1.0, "negatives": "semihard"}
    assert load_config("synthetic-quick", ['head.name="npt"']).head.params == npt
    assert load_config("synthetic-quick", ['head.name="arcface"', 'head.name="npt"']).head.params == npt
    # params given without negatives still train the shipped recipe; exact NPT is asked for by name
    assert (
        load_config("synthetic-quick", ["head.params={k=3, delta=1.0, r=1.0}"]).head.params["negatives"] == "semihard"
    )


def test_a_config_file_that_switches_the_head_does_not_inherit_the_base_heads_params(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('base = "synthetic-quick"\n[head]\nname = "normsoftmax"\n')
    assert load_config(str(path)).head.params == {"s": 64.0}


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["head.params={k=6, delta=1.0, r=1.0, m=0.5}"], r"head.params: head 'npt' has no parameter\(s\) \['m'\]"),
        (['head.params={k="six"}'], r"head.params: k = 'six' does not fit head 'npt': expected an integer or 'all'"),
        (['head.params.delta="1"'], "head.params: delta = '1' does not fit head 'npt'"),
        (['head.name="arcface"', "head.params={k=6}"], r"head 'arcface' has no parameter\(s\) \['k'\]"),
        (['head.name="sphereface"'], "head.name must be one of"),
        (["optim.lr=nan"], "optim.lr must be a finite number, got nan"),
        (["optim.momentum=inf"], "optim.momentum must be a finite number"),
        (["optim.sparse_proxies=true", "optim.grad_clip=1.0"], "optim.sparse_proxies = true cannot clip"),
        (['optim.sparse_proxies="yes"'], 'optim.sparse_proxies must be "auto", true or false'),
    ],
)
def test_head_params_and_non_finite_numbers_are_refused_at_load_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("synthetic-quick", overrides)


def test_an_npt_margin_no_embedding_can_reach_is_refused_naming_delta():
    # C/(C-1) is the largest cosine margin C classes can all meet: 300/299 for synthetic-quick.
    with pytest.raises(ConfigError, match=r"head.params.delta.*margin delta/\(2r\^2\) = 5.*limit is C/\(C-1\)"):
        load_config("synthetic-quick", ["head.params.delta=10"])
    with pytest.raises(ConfigError, match="head.params.delta"):
        load_config("synthetic-quick", ['head.name="proxytriplet"', "head.params={delta=2.1, r=1.0}"])
    assert load_config("synthetic-quick", ["head.params.delta=2.0"]).head.params["delta"] == 2.0  # margin 1
    with pytest.raises(ConfigError, match="head.params.delta"):  # unknown class count: the limit over all C is 2
        load_config("synthetic-quick", ['data.kind="imagefolder"', 'data.path="/faces"', "head.params.delta=4.0"])
    load_config("synthetic-quick", ['data.kind="imagefolder"', 'data.path="/faces"', "head.params.delta=3.0"])


def test_every_shipped_config_and_the_defaults_train_npt_with_semihard_negatives():
    for name in shipped_configs():
        assert load_config(name, ['data.path="/data/x"']).head.params["negatives"] == "semihard", name
    assert HeadSection().params["negatives"] == "semihard"


def test_exact_npt_is_one_override_that_keeps_the_other_head_params():
    config = load_config("synthetic-quick", ['head.params.negatives="hardest"', "head.shard_proxies=true"])
    assert config.head.params == {"k": 6, "delta": 1.0, "r": 1.0, "negatives": "hardest"}


def test_the_real_faces_config_trains_and_verifies_on_the_parts_the_prepare_script_writes():
    config = load_config("real-faces")
    prepared = Path(config.data.path).parent
    assert config.data.kind == "imagefolder" and Path(config.data.path).name == "train"
    assert {Path(s.path).parent for s in config.eval.sets} == {prepared}
    assert {Path(s.path).name for s in config.eval.sets} == {"celeba-heldout", "orl"}  # never "train"
    assert (config.model.input_size, config.head.name) == (64, "npt")
