"""Bad command-line values are one usage line, not a traceback deep in the run (issue 25, item 8):
every count flag is a positive (or non-negative) integer checked by argparse, and an unknown
``--layers`` name is refused before any work, naming the closest layer."""
from __future__ import annotations

import argparse

import pytest

from helpers.analyses import run_cli
from helpers.pipeline import make_images, make_model

from dvis.cli import build_parser
from dvis.commands import args as a

#: Integer flags that are not counts (indices, seeds, ids, ranges checked where they are used).
NOT_COUNTS = {"--unit", "--seed", "--camera", "--port", "--quality", "--preset"}


def _flags():
    """(command, flag, minimum) of every integer flag of every command."""
    sub = next(x for x in build_parser()._actions if isinstance(x, argparse._SubParsersAction))
    for command, parser in sub.choices.items():
        for action in parser._actions:
            if action.type in (a.POSITIVE, a.NON_NEGATIVE, int):
                yield command, action.option_strings[-1], action.type


def test_every_count_flag_is_checked():
    flags = list(_flags())
    loose = sorted({(c, f) for c, f, t in flags if t is int and f not in NOT_COUNTS})
    assert not loose, f"integer flags without a range: {loose}"
    counts = {(c, f): t for c, f, t in flags if t is not int}
    for command in ("maxes", "precompute"):
        assert counts[command, "--top"] is a.POSITIVE and counts[command, "--batch-size"] is a.POSITIVE
        assert counts[command, "--bottom-k"] is a.NON_NEGATIVE and counts[command, "--workers"] is a.NON_NEGATIVE
    for flag in ("--seeds", "--opt-batch-size"):
        assert counts["optimize", flag] is a.POSITIVE
    assert counts["crops", "--batch-size"] is a.POSITIVE and counts["occlusion", "--stride"] is a.POSITIVE


@pytest.mark.parametrize("command, flag, value, minimum", [
    ("maxes", "--top", "0", 1), ("maxes", "--top", "-1", 1), ("maxes", "--batch-size", "0", 1),
    ("maxes", "--bottom-k", "-1", 0), ("maxes", "--workers", "-2", 0), ("optimize", "--seeds", "0", 1),
    ("optimize", "--iters", "-5", 1), ("crops", "--batch-size", "0", 1), ("occlusion", "--size", "0", 1),
])
def test_a_count_below_its_minimum_is_one_usage_line(capsys, command, flag, value, minimum):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"dvis {command}: error: argument {flag}: must be at least {minimum}, got {value}"


def test_a_count_that_is_no_number_is_one_usage_line(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["maxes", "--top", "nine"])
    assert capsys.readouterr().err.splitlines()[-1] == "dvis maxes: error: argument --top: expected a whole number, got 'nine'"


def test_an_unknown_layer_is_refused_with_the_closest_name(tmp_path, capsys):
    model = make_model(tmp_path / "tiny")
    make_images(tmp_path / "imgs", n=4)
    for argv in (["optimize", "--layers", "cnov2", "--out", tmp_path / "vis", "--iters", "2"],
                 ["maxes", "--layers", "conv1,cnov2", "--images", tmp_path / "imgs", "--run-dir", tmp_path / "run"]):
        rc, _, err = run_cli(capsys, argv[0], "--model", model, *argv[1:], "--quiet")
        assert rc == 2 and err.count("\n") == 1, err
        assert err.startswith(f"dvis {argv[0]}: error: unknown layer 'cnov2' (did you mean conv2?); valid layers: ")
    assert not (tmp_path / "run").exists() and not (tmp_path / "vis").exists()  # refused before any work
