"""The `nptface` command: every subcommand has help, works, and fails with a clear message."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import numpy as np
import pytest

from nptface.cli import build_parser, main
from nptface.core.imagefolder import ImageFolderDataset


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = (), described: str | None = None):
    """(path, parser, its help) for the top parser and every subcommand below it, nested ones too."""
    yield path, parser, described
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, subparser in action.choices.items():
                yield from _commands(subparser, (*path, name), helps.get(name))


PARSER = build_parser()
COMMANDS = {
    " ".join(path): (parser, described) for path, parser, described in _commands(PARSER, (), PARSER.description)
}


def test_the_walk_reaches_nested_subcommands():
    assert {"", "export", "fed simulate", "fed bench one-owner", "demo serve", "data synth", "bench losses"} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_and_option_has_help(command, capsys):
    parser, described = COMMANDS[command]
    assert described, f"'nptface {command}' has no help text"
    undescribed = [
        action.option_strings[-1] if action.option_strings else action.dest
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert not undescribed, f"'nptface {command}': no help for {undescribed}"
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command.split(), "--help"])
    assert exit_info.value.code == 0
    assert f"usage: nptface {command}".rstrip() in capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_with_a_default_shows_it_in_help(command):
    parser, _ = COMMANDS[command]
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS):
            assert f"(default: {action.default})" in text, f"'nptface {command} {action.option_strings[-1]}'"


@pytest.mark.parametrize(
    "argv",
    [["-v", "model", "info"], ["model", "info", "-v"], ["data", "synth", "--verbose"], ["fed", "simulate", "-v"]],
)
def test_verbose_is_accepted_before_or_after_the_subcommand(argv):
    assert build_parser().parse_args(argv).verbose is True


def test_verbose_is_off_unless_given():
    assert build_parser().parse_args(["model", "info"]).verbose is False


def test_version_from_the_command_and_from_python_dash_m(capsys):
    import subprocess
    import sys

    from nptface import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"nptface {__version__}"
    done = subprocess.run([sys.executable, "-m", "nptface", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"nptface {__version__}"


@pytest.mark.parametrize(
    "module,argv,extra",
    [
        ("onnx", ["export", "--run", "r"], "export"),
        ("flwr", ["fed", "simulate"], "fl"),
        ("flwr", ["fed", "bench", "one-owner", "--out", "o"], "fl"),
    ],
)
def test_a_command_without_its_extra_names_the_extra_to_install(module, argv, extra):
    import subprocess
    import sys

    script = f"import sys; sys.modules[{module!r}] = None; from nptface.cli import main; sys.exit(main({argv!r}))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert f'pip install "nptface[{extra}]"' in done.stderr and "Traceback" not in done.stderr


def test_model_info_counts_parameters_and_macs(capsys):
    assert main(["model", "info", "--width", "0.25", "--input-size", "32", "--embedding-dim", "16"]) == 0
    out = capsys.readouterr().out
    assert "parameters:" in out and "MACs per image:" in out


def test_data_synth_writes_image_folder_and_preview(tmp_path, capsys):
    out, preview = tmp_path / "faces", tmp_path / "grid.png"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(out),
                "--preview",
                str(preview),
                "--identities",
                "3",
                "--images",
                "2",
                "--size",
                "48",
                "--id-range",
                "heldout",
            ]
        )
        == 0
    )
    dataset = ImageFolderDataset(out, image_size=48)
    assert dataset.num_classes == 3 and len(dataset) == 6
    assert dataset.class_names[0] == "synth-9000000"
    assert preview.is_file()


def test_data_synth_without_output_is_refused():
    with pytest.raises(SystemExit, match="--out"):
        main(["data", "synth"])


def test_eval_on_image_folder_with_a_pairs_file(tmp_path, capsys):

    run = _untrained_run(tmp_path / "run")
    data = tmp_path / "faces"
    main(["data", "synth", "--out", str(data), "--identities", "3", "--images", "3", "--size", "32"])
    pairs = tmp_path / "pairs.txt"
    names = [f"synth-{i:07d}" for i in range(3)]
    genuine = [f"{n}/{a:05d}.png {n}/{b:05d}.png 1" for n in names for a, b in ((0, 1), (0, 2), (1, 2))]
    impostor = [
        f"{names[i]}/{k:05d}.png {names[j]}/{k:05d}.png 0" for i, j in ((0, 1), (0, 2), (1, 2)) for k in range(3)
    ]
    pairs.write_text("\n".join(["# a comment", *genuine, "", *impostor]) + "\n")
    assert main(["eval", "--run", str(run), "--data", str(data), "--pairs", str(pairs)]) == 0
    out = capsys.readouterr().out
    assert "accuracy (cosine)" in out and (run / "eval.json").is_file()
    pairs.write_text("synth-0000000/00000.png missing.png 1\n")
    assert main(["eval", "--run", str(run), "--data", str(data), "--pairs", str(pairs)]) == 2
    assert "pairs.txt:1: 'missing.png' is not an image" in capsys.readouterr().err


def test_eval_of_a_folder_that_is_not_a_run_fails_clearly(tmp_path, capsys):
    assert main(["eval", "--run", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "checkpoint.json not found" in capsys.readouterr().err


def test_eval_on_a_verification_bin(tmp_path, capsys):

    from nptface.core.datasets import SyntheticFaceDataset, materialize
    from nptface.core.verification_bin import write_verification_bin

    run = _untrained_run(tmp_path / "run")
    faces = materialize(SyntheticFaceDataset(range(4), 6, "studio", image_size=32), progress=False)
    images, issame = [], []
    for i in range(12):
        a, b = (i % 4) * 6, (i % 4) * 6 + 1 + (i % 5)
        if i % 2:
            b = ((i + 1) % 4) * 6
        images += [faces.images[a], faces.images[b]]
        issame.append(not i % 2)
    write_verification_bin(tmp_path / "tiny.bin", images, issame)
    assert (
        main(["eval", "--run", str(run), "--bin", str(tmp_path / "tiny.bin"), "--out", str(tmp_path / "e.json")]) == 0
    )
    out = capsys.readouterr().out
    assert "24 images, 12 pairs" in out and "accuracy (cosine)" in out


def test_train_refuses_to_overwrite_a_run_with_checkpoints_before_reading_data(tmp_path, capsys, monkeypatch):
    tiny = [
        "data.identities=4",
        "data.images_per_identity=4",
        "model.width=0.25",
        "model.input_size=32",
        "model.embedding_dim=8",
        "head.params={k=2}",
        "optim.epochs=1",
        "optim.batch_size=8",
        "optim.milestones=[]",
        "optim.warmup_epochs=0.0",
        "eval.sets=[]",
        "log.progress=false",
    ]
    argv = ["train", "synthetic-quick", "--run-dir", str(tmp_path / "run")] + [a for o in tiny for a in ("--set", o)]
    assert main(argv) == 0
    import nptface.server.training.trainer as trainer

    build_train_data = trainer.build_train_data
    monkeypatch.setattr(trainer, "build_train_data", lambda *a, **k: pytest.fail("data was built for a refused run"))
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    monkeypatch.setattr(trainer, "build_train_data", build_train_data)
    assert main([*argv, "--resume"]) == 0


@pytest.mark.parametrize(
    "override,key",
    [("head.params.delta=10", "head.params.delta"), ("optim.lr=nan", "optim.lr"), ("head.params.m=0.5", "head.params")],
)
def test_train_config_errors_are_one_line_naming_the_key_and_leave_no_run_folder(tmp_path, capsys, override, key):
    run = tmp_path / "run"
    assert main(["train", "synthetic-quick", "--run-dir", str(run), "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nptface: error: ") and key in err and err.count("\n") == 1
    assert not run.exists()


def test_nptface_eval_and_the_trainer_score_a_folder_on_the_same_pairs_whatever_the_run_seed(tmp_path, monkeypatch):
    import torch

    import nptface.core.evaluation as evaluation
    from nptface.core.checkpoint import CheckpointMeta, save_checkpoint
    from nptface.core.mobilefacenet import MobileFaceNet
    from nptface.server.training.config import load_config
    from nptface.server.training.trainer import Trainer

    folder = tmp_path / "faces"
    main(["data", "synth", "--out", str(folder), "--identities", "4", "--images", "3", "--size", "32"])
    trainer_pairs = []
    for seed in (0, 5):
        config = load_config(
            "synthetic-quick",
            [
                "data.identities=4",
                "data.images_per_identity=4",
                "model.width=0.25",
                "model.input_size=32",
                "model.embedding_dim=8",
                "head.params={k=2}",
                "optim.batch_size=8",
                f"run.seed={seed}",
                f'eval.sets=[{{kind="imagefolder", path="{folder}"}}]',
                "log.progress=false",
            ],
        )
        trainer = Trainer(config, tmp_path / f"run{seed}")
        trainer_pairs.append(trainer.eval_sets[0].pairs)
        trainer.close()
    run = tmp_path / "model"
    save_checkpoint(
        run,
        MobileFaceNet(width=0.25, input_size=32, embedding_dim=8),
        torch.randn(2, 8),
        CheckpointMeta(
            model={"embedding_dim": 8, "width": 0.25, "input_size": 32},
            head="npt",
            head_hparams={},
            class_names=["a", "b"],
        ),
    )
    scored = []
    evaluate_model = evaluation.evaluate_model
    monkeypatch.setattr(
        evaluation,
        "evaluate_model",
        lambda model, dataset, pairs, **kw: scored.append(pairs) or evaluate_model(model, dataset, pairs, **kw),
    )
    assert main(["eval", "--run", str(run), "--data", str(folder)]) == 0
    for pairs in trainer_pairs:
        for field in ("index_a", "index_b", "is_same"):
            assert np.array_equal(getattr(pairs, field), getattr(scored[0], field))


def _untrained_run(run: Path) -> Path:
    """A run directory holding an untrained quarter-width 32 px model: enough to exercise ``eval``."""
    import torch

    from nptface.core.checkpoint import CheckpointMeta, save_checkpoint
    from nptface.core.mobilefacenet import MobileFaceNet

    meta = CheckpointMeta(
        model={"embedding_dim": 16, "width": 0.25, "input_size": 32},
        head="npt",
        head_hparams={},
        class_names=["a", "b"],
    )
    return save_checkpoint(run, MobileFaceNet(width=0.25, input_size=32, embedding_dim=16), torch.randn(2, 16), meta)


def test_fed_simulate_refuses_a_too_small_evaluation_before_any_training(tmp_path, capsys, monkeypatch):
    from nptface.simulation import run

    monkeypatch.setattr(run, "simulate", lambda *args, **kwargs: pytest.fail("trained despite unusable settings"))
    out = tmp_path / "fed"
    repro = "num-rounds=1 num-clients=2 client-identities=4 images-per-identity=4 eval-images=1"
    argv = ["fed", "simulate", "--no-baselines", "--set", f"out-dir={out}"]
    for setting in repro.split():
        argv += ["--set", setting]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("nptface: error: eval-images must be 0 (no local evaluation) or >= 2") and "got 1" in error
    assert not out.exists()


def test_fed_bench_one_owner_is_the_benchmarks_own_parser(capsys):
    from nptface.simulation.one_owner import configure_parser

    with pytest.raises(SystemExit) as exit_info:
        main(["fed", "bench", "one-owner", "--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: nptface fed bench one-owner") and "--fedprox-mu" in shown

    own = argparse.ArgumentParser()
    configure_parser(own)
    cli = COMMANDS["fed bench one-owner"][0]
    cli.format_help()  # its options are added on first use
    assert {o for a in cli._actions for o in a.option_strings} - {"-v", "--verbose"} == {
        o for a in own._actions for o in a.option_strings
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--devices", "many"], "nptface fed bench one-owner: error: argument --devices: invalid int value: 'many'"),
        (["--methods", "fedsgd"], "nptface: error: methods ['fedsgd']: expected some of shared-bank"),
        (["--methods", "fedprox"], "nptface: error: method fedprox: with local-epochs=1"),
        (["--fedprox-mu", "-1", "--methods", "fedprox", "--set", "local-epochs=2"], "fedprox-mu must be a finite"),
        (["--set", "num-round=3"], "nptface: error: unknown run-config key 'num-round'"),
    ],
)
def test_fed_bench_one_owner_refuses_a_bad_argument_in_one_line_before_any_training(
    argv, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(
        "nptface.simulation.one_owner.run_bench", lambda *a, **k: pytest.fail("trained despite a bad argument")
    )
    out = tmp_path / "bench"
    try:
        status = main(["fed", "bench", "one-owner", "--out", str(out), *argv])
    except SystemExit as exit_info:  # argparse's own errors
        status = exit_info.code
    error = capsys.readouterr().err
    assert status == 2 and message in error and "Traceback" not in error
    assert not out.exists()


def test_fed_bench_one_owner_needs_an_out_folder(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fed", "bench", "one-owner"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,says",
    [
        (["bench", "losses", "--scale", "--tune-lr", "0"], "expected a learning rate > 0, got '0'"),
        (["bench", "losses", "--scale", "--tune-lr", "fast"], "expected a learning rate > 0, got 'fast'"),
        (["bench", "losses", "--tune-lr", "0.1"], "--tune-lr: learning-rate tuning is part of the scale comparison"),
    ],
)
def test_bench_losses_refuses_a_bad_tuning_grid_before_training(argv, says, capsys, tmp_path):
    with pytest.raises(SystemExit) if "got" in says else contextlib.nullcontext():
        code = main([*argv, "--out", str(tmp_path / "out")])
        assert code == 2
    assert says in capsys.readouterr().err and not (tmp_path / "out").exists()
