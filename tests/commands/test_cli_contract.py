"""The command-line contract (dvis.commands.args): grouped help, help without heavy imports, one
spelling per flag (old spellings still parse, with one deprecation line), every option explained,
and precompute passing each step's flags on."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import yaml

import dvis.pipeline.precompute as precompute_module
from dvis.cli import COMMANDS, build_parser, main
from dvis.commands.args import resolve_model_alias
from dvis.errors import DvisError

NAMES = [name for _group, commands in COMMANDS for name, _module in commands]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def parse(*argv: str) -> argparse.Namespace:
    """Parse ``dvis argv...`` and fold the positional MODEL, as ``dvis`` does before running."""
    args = build_parser().parse_args([str(a) for a in argv])
    resolve_model_alias(args)
    return args


def test_help_groups_commands_by_purpose(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    heads = [out.index(f"\n{group}:\n") for group in ("apps", "pipeline", "models", "experiments")]
    assert heads == sorted(heads)
    for group, commands in COMMANDS:  # each command listed once, under its group
        section = out[out.index(f"\n{group}:\n"):]
        section = section[:section.find("\n\n", 2)]
        assert [line.split()[0] for line in section.strip().splitlines()[1:]] == [n for n, _ in commands]
    assert sorted(NAMES) == sorted(_subparsers(build_parser()))


def test_help_imports_nothing_heavy():
    code = ("import sys, argparse\n"
            "from dvis.cli import build_parser\n"
            "p = build_parser(); p.format_help()\n"
            "sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))\n"
            "names = sorted(sub.choices)\n"
            "[sub.choices[n].format_help() for n in names]\n"
            "heavy = [m for m in ('torch', 'torchvision', 'cv2', 'matplotlib') if m in sys.modules]\n"
            "import json; print(json.dumps([names, heavy]))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    names, heavy = json.loads(r.stdout)
    assert names == sorted(NAMES) and heavy == []


def test_every_option_has_help():
    bare = [f"{name} {'/'.join(action.option_strings) or action.dest}"
            for name, sub in _subparsers(build_parser()).items() for action in sub._actions
            if not action.help and action.help != argparse.SUPPRESS]
    assert bare == []


@pytest.mark.parametrize("argv, dest, value, old", [
    (["maxes", "--out", "R", "--images", "I"], "run", "R", "--out"),
    (["precompute", "--run", "R", "--images", "I"], "run", "R", "--run"),
    (["optimize", "--maxes", "R", "--layers", "fc"], "run", "R", "--maxes"),
    (["optimize", "--start", "uniform", "--layers", "fc"], "start", "uniform", "--start"),
    (["optimize", "--layer", "fc"], "layers", "fc", "--layer"),
    (["crops", "R"], "run", "R", "the run folder as a positional"),
    (["filters", "--layer", "conv1"], "layers", "conv1", "--layer"),
    (["occlusion", "--layer", "conv1", "--images", "a.png"], "layers", "conv1", "--layer"),
    (["occlusion", "--image", "a.png"], "images", ["a.png"], "--image"),
    (["unit-stats", "--corr-layers", "conv1,conv2"], "layers", "conv1,conv2", "--corr-layers"),
    (["vis-info", "--out", "U"], "unit_vis", "U", "--out"),
    (["invariance", "--images", "a.png", "b.png"], "images", ["a.png", "b.png"], "space-separated --images"),
])
def test_deprecated_spellings_still_work_and_warn(capsys, argv, dest, value, old):
    args = parse(*argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"dvis {argv[0]}: warning: ") and old in err[0]
    assert "is deprecated, use " in err[0]


def test_deprecation_lines_are_one_line_each(capsys):
    parse("maxes", "--out", "R", "--images", "I")
    assert capsys.readouterr().err == "dvis maxes: warning: --out is deprecated, use --run-dir\n"
    parse("crops", "R")
    assert capsys.readouterr().err == "dvis crops: warning: the run folder as a positional is deprecated, use --run-dir R\n"
    parse("invariance", "--images", "a.png", "b.png")
    assert capsys.readouterr().err == ("dvis invariance: warning: a space-separated --images list is deprecated, "
                                       "use commas: --images a.png,b.png\n")
    assert main(["maxes-merge", "/nonexistent-run"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "dvis maxes-merge: warning: the run folder as a positional is deprecated, use --run-dir /nonexistent-run"
    assert err[1].startswith("dvis maxes-merge: error:")


def test_new_spellings_parse_without_warnings(capsys):
    assert parse("maxes", "resnet18", "--run-dir", "R", "--images", "I").model == "resnet18"
    args = parse("crops", "resnet18", "--run-dir", "R", "--modes", "deconv,guided")
    assert (args.model, args.run, args.modes) == ("resnet18", "R", ["deconv", "guided"])
    assert parse("filters", "--model", "a,b", "--weights", "none,none").model == ["a", "b"]
    assert parse("evolution", "--images", "a.png,b.png", "--units", "0,conv1:3").units == ["0", "conv1:3"]
    assert parse("invariance", "--images", "a", "--transforms", "scale,rotate").transforms == ["scale", "rotate"]
    assert capsys.readouterr().err == ""


def test_torchrun_passes_every_flag_on():
    """torchrun parses the whole command line first and takes any abbreviation of its own flags
    (``--run`` is its ``--run-path``): the commands' flags must reach dvis untouched."""
    from torch.distributed.run import get_args_parser

    flags = sorted({s for sub in _subparsers(build_parser()).values() for a in sub._actions
                    for s in a.option_strings if s.startswith("--") and a.help != argparse.SUPPRESS} - {"--help"})
    clash = []
    for flag in flags:
        try:
            args = get_args_parser().parse_args(["--nproc-per-node=2", "-m", "dvis", "precompute", flag, "X"])
        except SystemExit:
            clash.append(flag)
            continue
        if args.training_script_args != ["precompute", flag, "X"]:
            clash.append(flag)
    assert clash == []


@pytest.mark.parametrize("argv", [["crops", "--run-dir", "R", "--modes", "deconv,nope"],
                                  ["invariance", "--images", "a", "--transforms", "scale,spin"],
                                  ["precompute", "--images", "I", "--skip", "maxes,tea"]])
def test_lists_are_checked_against_their_choices(capsys, argv):
    with pytest.raises(SystemExit):
        parse(*argv)
    err = capsys.readouterr().err
    assert "invalid choice" in err or "choose" in err


def test_the_model_is_given_the_same_way_everywhere():
    loaders = [n for n in NAMES if n not in ("keys", "maxes-merge")]
    for name in loaders:
        sub = _subparsers(build_parser())[name]
        dests = {a.dest for a in sub._actions}
        assert {"model", "model_positional"} <= dests, name
        if name not in ("atlas", "unit-stats"):  # these two read the model's files, never its weights
            assert "weights" in dests, name
    with pytest.raises(DvisError, match="two models"):
        parse("info", "alexnet", "--model", "vgg11")


def test_precompute_passes_each_steps_flags_on(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_precompute(model, images, out, run_dir, layers, track, modes, settings, skip, force, model_spec, shard,
                        labels_file):
        seen.update(model=model, track=track, modes=modes, settings=settings, skip=skip, shard=shard,
                    labels=labels_file, run=run_dir, out=out)
        return tmp_path

    monkeypatch.setattr(precompute_module, "precompute", fake_precompute)
    rc = main(["precompute", "resnet18", "--weights", "none", "--images", str(tmp_path), "--run-dir", "R",
               "--out", str(tmp_path / "uv"), "--precision", "bf16", "--bottom-k", "3", "--labels", "labels.txt",
               "--no-stats", "--checkpoint-every", "5", "--top", "4", "--modes", "deconv,grad", "--iters", "7",
               "--seeds", "1", "--skip", "optimize", "--shard", "0/2", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert seen["model"].weights_source == "none (random init)" and seen["model"].name == "resnet18"
    t = seen["track"]
    assert (t.precision, t.bottom_k, t.stats, t.checkpoint_every, t.top, t.progress) == ("bf16", 3, False, 5.0, 4, False)
    assert seen["labels"] == "labels.txt" and seen["modes"] == ("deconv", "grad") and seen["skip"] == ("optimize",)
    assert (seen["settings"].iters, seen["settings"].seeds) == (7, 1)
    assert (seen["shard"].rank, seen["shard"].world, seen["shard"].files) == (0, 2, True)
    assert f"check with `dvis vis-info resnet18 --weights none --unit-vis {tmp_path / 'uv'}`" in out
    assert "no weights given" not in err and "weights none, the net has random init" in err


def test_weights_messages_name_the_way_out(tmp_path):
    from dvis.models.loading import load_model

    (tmp_path / "model.yaml").write_text(yaml.safe_dump({"name": "no-weights", "architecture": "resnet18"}))
    with pytest.warns(UserWarning, match="no weights given.*--weights none"):
        load_model(tmp_path)
    with pytest.warns(UserWarning, match="weights none, the net has random init") as record:
        load_model("resnet18", weights="none")
    assert not any("no weights given" in str(w.message) for w in record)
    with pytest.raises(DvisError, match="not found.*--weights none for random init"):
        load_model("resnet18", weights="/nonexistent/weights.pt")


def test_atlas_and_unit_stats_load_no_weights(tmp_path, recwarn):
    from dvis.models.loading import load_model, load_model_layout

    folder = tmp_path / "lost-weights"
    folder.mkdir()
    (folder / "model.yaml").write_text(yaml.safe_dump({"name": "lost-weights", "architecture": "resnet18",
                                                       "weights": "gone.pt", "layers": ["conv1", "layer1"]}))
    with pytest.raises(DvisError, match="gone.pt not found"):
        load_model(folder)
    model = load_model_layout(folder)
    assert model.layers == ["conv1", "layer1"] and model.folder == folder
    assert not [w for w in recwarn if "random init" in str(w.message)]
