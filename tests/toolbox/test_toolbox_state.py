"""Every binding changes the state as documented (pure transitions, no window)."""
from dataclasses import replace

import pytest

from dvis.toolbox.actions import ACTIONS, apply, select_at
from dvis.toolbox.state import Geometry, State

# Layer 0: 10 units in a 3x4 grid (last row partial); layer 1: 6 units in 2x3; layer 2: fc 4 units 1x4.
GEO = Geometry(grids=((3, 4), (2, 3), (1, 4)), n_units=(10, 6, 4), n_images=3, n_checkpoints=2,
               back_presets=(("grad", "raw"), ("grad", "norm"), ("deconv", "raw"), ("guided", "raw")))


def run(keys, state=State()):
    for action in keys:
        state = apply(state, action, GEO).state
    return state


def test_arrows_move_in_the_grid_and_clamp():
    s = run(["sel_right", "sel_right", "sel_down"])
    assert (s.layer, s.unit) == (0, 6)
    s = run(["sel_down", "sel_down", "sel_down", "sel_right", "sel_right", "sel_right", "sel_right"], s)
    assert s.unit == 9  # bottom row has units 8, 9 only: clamped to the last unit
    assert run(["sel_left"] * 5).unit == 0


def test_fast_moves_go_three():
    assert run(["sel_right_fast"]).unit == 3
    assert run(["sel_down_fast"]).unit == 8  # row 2 is the last row
    assert run(["sel_right_fast", "sel_left_fast"]).unit == 0


def test_up_from_top_row_goes_to_layer_list_where_left_right_change_layer():
    s = run(["sel_right", "sel_up"])
    assert s.on_layer_list and s.unit == 1
    s = run(["sel_right", "sel_right"], s)
    assert (s.layer, s.unit, s.on_layer_list) == (2, 1, True)
    s = run(["sel_right", "sel_up"], s)  # past the last layer: stays; up on the list: nothing
    assert (s.layer, s.on_layer_list) == (2, True)
    s = run(["sel_down"], s)
    assert not s.on_layer_list and s.layer == 2


def test_layer_keys_keep_the_cursor_clamped():
    s = run(["sel_down", "sel_down", "sel_right"])  # unit 9
    s = run(["next_layer"], s)
    assert (s.layer, s.unit) == (1, 5)
    assert run(["prev_layer"]).layer == 0
    assert run(["next_layer"] * 5).layer == 2


def test_b_cycles_back_projection_presets():
    seen = []
    s = State()
    for _ in range(5):
        s = apply(s, "cycle_back", GEO).state
        seen.append((s.back_on, s.back_mode, s.back_filter) if s.back_on else "off")
    assert seen == [(True, "grad", "raw"), (True, "grad", "norm"), (True, "deconv", "raw"),
                    (True, "guided", "raw"), "off"]


def test_n_and_m_cycle_mode_and_filter():
    assert [run(["back_mode"] * k).back_mode for k in (1, 2, 3)] == ["deconv", "guided", "grad"]
    assert [run(["back_filter"] * k).back_filter for k in (1, 2, 3, 4)] == ["gray", "norm", "normblur", "raw"]


def test_freeze_keeps_back_source_while_browsing():
    s = run(["sel_right", "cycle_back", "freeze_back", "next_layer", "sel_right"])
    assert s.frozen == (0, 1) and s.back_source() == (0, 1) and (s.layer, s.unit) == (1, 2)
    s = run(["freeze_back"], s)
    assert s.frozen is None and s.back_source() == (1, 2)


@pytest.mark.parametrize("action,field", [
    ("toggle_diffs", "show_diffs"), ("pattern", "pattern"), ("toggle_top5", "show_top5"),
    ("toggle_unit_images", "show_unit_images"), ("camera", "camera"), ("freeze_camera", "camera_frozen"),
    ("crop", "crop"), ("help", "show_help"), ("occlusion", "occlusion")])
def test_toggles(action, field):
    s = State()
    assert getattr(run([action], s), field) != getattr(s, field)
    assert getattr(run([action, action], s), field) == getattr(s, field)


def test_zoom_and_boost_cycles():
    assert [run(["zoom"] * k).zoom for k in range(4)] == ["off", "unit", "back", "off"]
    assert [run(["boost_indiv"] * k).boost_indiv for k in (1, 5)] == [1, 0]
    assert [run(["boost_gamma"] * k).boost_gamma for k in (1, 4)] == [1, 0]


def test_images_wrap_and_checkpoints_step_through_final():
    assert [run(["next_image"] * k).image for k in (1, 2, 3)] == [1, 2, 0]
    assert run(["prev_image"]).image == 2 and run(["prev_image"]).image_step == -1
    assert run(["prev_image", "next_image"]).image_step == 1
    assert [run(["next_checkpoint"] * k).checkpoint for k in range(4)] == [-1, 0, 1, -1]
    assert run(["prev_checkpoint"]).checkpoint == 1


def test_reset_keeps_input_but_clears_view_and_quit_sets_flag():
    s = run(["next_image", "crop", "cycle_back", "next_layer", "sel_right", "zoom", "help", "freeze_back"])
    r = run(["reset"], s)
    assert r == State(image=1, crop=False)
    assert run(["quit"]).quit and not run(["screenshot"]).quit


def test_every_action_is_handled_and_layer_list_clicks():
    for action in ACTIONS:
        assert isinstance(apply(State(), action, GEO).state, State)
    assert apply(State(), "no_such_action", GEO) == (State(), ())
    assert apply(State(), "screenshot", GEO) == (State(), ("screenshot",))  # a side effect only
    s = select_at(replace(State(), unit=7), 1, None, GEO)
    assert (s.layer, s.unit, s.on_layer_list) == (1, 5, True)
    assert select_at(s, 2, 3, GEO) == replace(s, layer=2, unit=3, on_layer_list=False)
