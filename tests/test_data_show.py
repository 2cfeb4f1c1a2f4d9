"""`wm data show`: an episode as MP4/GIF with its step, action, reward and labels, markers at
the pixel positions the env declares, a contact sheet per policy, and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from wm_framework.cli import main
from wm_framework.commands.data import app
from wm_framework.data.store import EpisodeStore
from wm_framework.data.viewer import COLOURS, EpisodeRenderer

runner = CliRunner()


@pytest.fixture(scope="module")
def ball_store(tmp_path_factory):
    from wm_framework.data.collect import collect

    path = tmp_path_factory.mktemp("show") / "ball.zarr"
    collect(path, {"type": "bouncing_ball", "size": 24, "max_steps": 15}, [{"type": "random"}, {"type": "sticky_random"}],
            episodes=2, progress=False)
    return str(path)


def decoded_mp4(path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_episode_video_gif_and_contact_sheet_decode(ball_store, tmp_path):
    from PIL import Image

    mp4 = tmp_path / "ep.mp4"
    res = runner.invoke(app, ["show", ball_store, "--episode", "1", "--out", str(mp4), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "episode 1, 16 frames at 15 fps" in res.output  # 15 steps: 16 rows; the env's render_fps
    assert "markers: ball_x, ball_y, paddle_x (from env 'bouncing_ball'" in res.output
    frames = decoded_mp4(mp4)
    assert frames.shape[0] == 16 and frames.shape[1] % 2 == 0 and frames.shape[2] % 2 == 0
    gif = tmp_path / "ep.gif"
    assert runner.invoke(app, ["show", ball_store, "--out", str(gif), "--start", "2", "--stop", "9"]).exit_code == 0
    with Image.open(gif) as im:
        assert im.n_frames == 7 and im.size == (frames.shape[2], frames.shape[1])
    sheet = tmp_path / "sheet.png"
    res = runner.invoke(app, ["show", ball_store, "--grid", "--per-policy", "3", "--out", str(sheet)])
    assert res.exit_code == 0 and "3 random frames of each of 2 policies (seed 0)" in res.output
    with Image.open(sheet) as im:
        im.load()
        assert im.format == "PNG" and im.width > 3 * 24 and im.height > 2 * 24
    again = tmp_path / "again.png"
    runner.invoke(app, ["show", ball_store, "--grid", "--per-policy", "3", "--out", str(again)])
    assert again.read_bytes() == sheet.read_bytes()  # seeded


def test_markers_sit_on_the_labelled_pixels(ball_store):
    store = EpisodeStore.open(ball_store)
    renderer = EpisodeRenderer(store, 0, ["ball_x", "ball_y", "paddle_x"])
    ep = store.episode(0)
    s = renderer.scale
    for t in (0, 5, 10):
        picture = np.asarray(renderer.picture(t))[:, : store.obs_shape[1] * s]
        ring = np.argwhere(np.all(picture == COLOURS[0], axis=-1))  # the ball's ring (first marker colour)
        centre = ring.mean(axis=0)[::-1] / s - 0.5  # back to the frame's pixel coordinates (x, y)
        np.testing.assert_allclose(centre, [ep["labels/ball_x"][t], ep["labels/ball_y"][t]], atol=0.75)
        tick = np.argwhere(np.all(picture == COLOURS[1], axis=-1))  # paddle_x alone: a tick under its column
        assert abs(tick[:, 1].mean() / s - 0.5 - ep["labels/paddle_x"][t]) <= 0.75


def test_state_store_renders_a_state_plot_and_refuses_a_grid(tmp_path):
    from wm_framework.data.collect import collect

    path = str(tmp_path / "lin.zarr")
    collect(path, {"type": "linear_state", "max_steps": 6}, [{"type": "random"}], episodes=1, progress=False)
    res = runner.invoke(app, ["show", path, "--out", str(tmp_path / "s.mp4"), "--fps", "5"])
    assert res.exit_code == 0 and "7 steps of the state plot at 5 fps" in res.output
    assert decoded_mp4(tmp_path / "s.mp4").shape[0] == 7
    assert main(["data", "show", path, "--grid", "--out", str(tmp_path / "g.png")]) == 2


def test_one_line_errors_exit_2(ball_store, tmp_path, capsys):
    cases = [(["--episode", "9"], "--episode 9: store"), (["--out", str(tmp_path / "x.avi")], "a video is .mp4 or .gif"),
             (["--markers", "nope_x"], "--markers: store has no label 'nope_x'"),
             (["--markers", "ball_vx"], "is not named <thing>_x or <thing>_y"),
             (["--start", "5", "--stop", "99"], "--start 5 --stop 99"),
             (["--grid", "--out", str(tmp_path / "g.gif")], "a contact sheet is written as .png")]
    for args, message in cases:
        assert main(["data", "show", ball_store, "--no-progress", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_info_names_the_show_command(ball_store):
    res = runner.invoke(app, ["info", ball_store])
    assert res.exit_code == 0 and "wm data show" in res.output
