"""Looking at a store: an episode as a video, random frames as a contact sheet (``wm data show``).

An episode renders frame by frame (streamed: a long Atari episode is never held whole)
as its frame, upscaled with nearest neighbours, beside a panel with the step, action,
reward, return and labels. Labels that are pixel positions (``display.pixel_labels``:
declared by the store or its env, or named with ``--markers``) are drawn on the frame:
a ``<thing>_x``/``<thing>_y`` pair as a ring, a lone ``_x`` as a tick under the frame's
column, a lone ``_y`` as a tick beside its row. A state store has no frame; its
picture is the episode's state components over time with a cursor at the step.

MP4 is H.264 through PyAV, GIF through Pillow (every frame in memory, palette-reduced:
refused beyond ``MAX_GIF_FRAMES``), the contact sheet PNG; each file is written through
a temp file and renamed (``atomic.py``).
"""

from __future__ import annotations

import io
import math
import os

import numpy as np

from wm_framework.atomic import atomic_write, atomic_write_bytes
from wm_framework.console import Progress
from wm_framework.data.display import pixel_labels, store_fps
from wm_framework.data.store import EpisodeStore
from wm_framework.errors import WMUsageError

VIDEO_SUFFIXES = (".mp4", ".gif")
MAX_GIF_FRAMES = 2000
PANEL_WIDTH, LINE_HEIGHT, TARGET_HEIGHT = 230, 14, 256
COLOURS = [(255, 220, 0), (0, 220, 255), (255, 60, 200), (120, 255, 80), (255, 140, 0)]
BACKGROUND, TEXT, DIM = (24, 24, 28), (235, 235, 235), (150, 150, 160)


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """A stored frame (H, W, C) as RGB: grey replicated, alpha dropped, other channel
    counts shown as the grey of their first channel."""
    if frame.shape[-1] >= 3:
        return np.ascontiguousarray(frame[..., :3])
    return np.repeat(frame[..., :1], 3, axis=-1)


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


# -- markers ---------------------------------------------------------------------------------------
def marker_groups(names: list[str]) -> list[tuple[str, str | None, str | None]]:
    """(thing, x label, y label) for pixel labels named ``<thing>_x`` / ``<thing>_y``."""
    things: dict[str, list] = {}
    for name in names:
        thing, axis = name[:-2], name[-1]
        things.setdefault(thing, [None, None])["xy".index(axis)] = name
    return [(thing, x, y) for thing, (x, y) in things.items()]


def draw_markers(draw, groups, values: dict, scale: int, size: tuple[int, int]) -> None:
    """Draw each group at its label values (pixel centres at integers; NaN: not drawn)."""
    h, w = size
    r = max(3, scale * 1.5)
    for k, (_, xl, yl) in enumerate(groups):
        colour = COLOURS[k % len(COLOURS)]
        x = values.get(xl, math.nan) if xl else None
        y = values.get(yl, math.nan) if yl else None
        px = (x + 0.5) * scale if x is not None else None
        py = (y + 0.5) * scale if y is not None else None
        if px is not None and py is not None:
            if math.isfinite(px) and math.isfinite(py):
                draw.ellipse([px - r, py - r, px + r, py + r], outline=colour, width=2)
        elif px is not None and math.isfinite(px):  # a column only: a tick rising from the bottom edge
            draw.polygon([(px, h * scale - 2 * r), (px - r, h * scale - 1), (px + r, h * scale - 1)], outline=colour)
        elif py is not None and math.isfinite(py):  # a row only: a tick from the left edge
            draw.polygon([(2 * r, py), (0, py - r), (0, py + r)], outline=colour)


# -- one picture per row ---------------------------------------------------------------------------
class EpisodeRenderer:
    """Renders rows of one episode as RGB images of one fixed, even size."""

    def __init__(self, store: EpisodeStore, episode: int, markers: list[str]):
        self.store, self.episode = store, episode
        self.data = store.episode(episode)
        self.pixels = store.obs_key == "obs/pixels"
        self.groups = marker_groups(markers) if self.pixels else []
        self.rows = len(self.data["obs"])
        h = store.obs_shape[0] if self.pixels else TARGET_HEIGHT
        self.scale = max(1, round(TARGET_HEIGHT / h)) if self.pixels else 1
        self.returns = np.cumsum(self.data["reward"].astype(np.float64))
        lines = 7 + len(store.label_names) + len(self.groups)
        self.height = max(h * self.scale, lines * LINE_HEIGHT + 8)
        self.width = (store.obs_shape[1] * self.scale if self.pixels else 2 * TARGET_HEIGHT) + PANEL_WIDTH
        self.height += self.height % 2  # H.264 with yuv420p needs even sizes
        self.width += self.width % 2
        self.font = _font()

    def picture(self, t: int):
        from PIL import Image, ImageDraw

        canvas = Image.new("RGB", (self.width, self.height), BACKGROUND)
        if self.pixels:
            frame = as_rgb(self.data["obs"][t])
            image = Image.fromarray(frame).resize(
                (frame.shape[1] * self.scale, frame.shape[0] * self.scale), Image.NEAREST)
            values = {name: float(self.data[f"labels/{name}"][t]) for name in self.store.label_names}
            draw_markers(ImageDraw.Draw(image), self.groups, values, self.scale, frame.shape[:2])
        else:
            image = self._state_plot(t)
        canvas.paste(image, (0, 0))
        self._panel(ImageDraw.Draw(canvas), t, image.width + 8)
        return canvas

    def _state_plot(self, t: int):
        """The state's components over the episode, each scaled to its own range; a cursor at t."""
        from PIL import Image, ImageDraw

        w, h = 2 * TARGET_HEIGHT, TARGET_HEIGHT
        image = Image.new("RGB", (w, h), (12, 12, 16))
        draw = ImageDraw.Draw(image)
        states = self.data["obs"].astype(np.float64)
        lo, hi = states.min(0), states.max(0)
        norm = (states - lo) / np.where(hi > lo, hi - lo, 1.0)
        xs = np.linspace(4, w - 4, max(self.rows, 2))[: self.rows]
        for j in range(min(states.shape[1], 16)):
            ys = (h - 6) - norm[:, j] * (h - 12)
            draw.line(list(zip(xs.tolist(), ys.tolist())), fill=COLOURS[j % len(COLOURS)], width=1)
        draw.line([(xs[t], 0), (xs[t], h)], fill=TEXT, width=1)
        return image

    def _panel(self, draw, t: int, x: int) -> None:
        store, data, e = self.store, self.data, self.episode
        last = t == self.rows - 1
        action = data["action"][t]
        if last:
            act = "- (final observation)"
        elif np.ndim(action):
            act = "[" + ", ".join(f"{v:.2f}" for v in action[:4]) + (", ...]" if len(action) > 4 else "]")
        else:
            act = str(int(action))
        flag = "terminated" if data["terminated"][t] else "truncated" if data["truncated"][t] else ""
        lines = [(f"episode {e} of {store.num_episodes}", TEXT), (f"policy {store.episode_policy[e]}", TEXT),
                 (f"step {t} of {self.rows - 1} {flag}", TEXT), (f"action {act}", TEXT),
                 (f"reward {float(data['reward'][t]):g}  return {self.returns[t]:g}", TEXT), ("labels", DIM)]
        lines += [(f"  {n} {float(data[f'labels/{n}'][t]):.2f}", TEXT) for n in store.label_names]
        for k, (thing, xl, yl) in enumerate(self.groups):
            lines.append((f"o {thing} ({', '.join(n for n in (xl, yl) if n)})", COLOURS[k % len(COLOURS)]))
        for i, (text, colour) in enumerate(lines):
            draw.text((x, 4 + i * LINE_HEIGHT), text, fill=colour, font=self.font)


# -- commands --------------------------------------------------------------------------------------
def show_episode(store_path, episode: int = 0, out=None, markers: list[str] | None = None, fps: int | None = None,
                 start: int = 0, stop: int | None = None, progress: bool = False) -> dict:
    """Write episode ``episode`` (rows ``start``..``stop``) of a store as MP4 or GIF; a summary."""
    store = EpisodeStore.open(store_path)
    if not 0 <= episode < store.num_episodes:
        raise WMUsageError(f"--episode {episode}: store '{store.path}' has episodes 0..{store.num_episodes - 1}")
    out = os.fspath(out or f"{_stem(store)}_episode{episode}.mp4")
    suffix = os.path.splitext(out)[1].lower()
    if suffix not in VIDEO_SUFFIXES:
        raise WMUsageError(f"--out {out}: a video is .mp4 or .gif (a contact sheet, with --grid, is .png)")
    names, source = pixel_labels(store, markers)
    fps, _ = store_fps(store, fps)
    renderer = EpisodeRenderer(store, episode, names)
    stop = renderer.rows if stop is None else stop
    if not 0 <= start < stop <= renderer.rows:
        raise WMUsageError(f"--start {start} --stop {stop}: episode {episode} has rows 0..{renderer.rows - 1}")
    if suffix == ".gif" and stop - start > MAX_GIF_FRAMES:
        raise WMUsageError(f"a GIF of {stop - start} frames is held whole in memory; at most {MAX_GIF_FRAMES} "
                           "(write .mp4, or choose rows with --start/--stop)")
    with Progress(stop - start, 0, "render", progress and stop > start, unit="frame") as bar:
        def pictures():
            for t in range(start, stop):
                yield renderer.picture(t)
                bar.advance()

        (_write_mp4 if suffix == ".mp4" else _write_gif)(out, pictures(), fps, renderer.width, renderer.height)
    return {"path": out, "episode": episode, "frames": stop - start, "fps": fps, "markers": names,
            "markers_from": source, "pixels": renderer.pixels}


def contact_sheet(store_path, out=None, per_policy: int = 8, seed: int = 0, markers: list[str] | None = None) -> dict:
    """A PNG of ``per_policy`` random frames of each policy (seeded), one row per policy."""
    from PIL import Image, ImageDraw

    store = EpisodeStore.open(store_path)
    if store.obs_key != "obs/pixels":
        raise WMUsageError(f"store '{store.path}' holds states, not frames: --grid needs a pixel store "
                           "(wm data show --episode N plots the states)")
    if not 1 <= per_policy <= 64:
        raise WMUsageError(f"--per-policy must be from 1 to 64, got {per_policy}")
    out = os.fspath(out or f"{_stem(store)}_grid.png")
    if os.path.splitext(out)[1].lower() != ".png":
        raise WMUsageError(f"--out {out}: a contact sheet is written as .png")
    names, source = pixel_labels(store, markers)
    groups = marker_groups(names)
    rng = np.random.default_rng(seed)
    h, w = store.obs_shape[:2]
    scale = max(1, round(96 / h))
    cell_w, cell_h, head = max(w * scale, 60), h * scale + LINE_HEIGHT + 4, 110
    policies = store.policies()
    sheet = Image.new("RGB", (head + per_policy * (cell_w + 4), len(policies) * (cell_h + 4) + 4), BACKGROUND)
    draw, font = ImageDraw.Draw(sheet), _font()
    for p, policy in enumerate(policies):
        y0 = 4 + p * (cell_h + 4)
        draw.text((4, y0 + cell_h // 2 - 6), policy[:16], fill=TEXT, font=font)
        episodes = np.flatnonzero(store.episode_policy == policy)
        rows = np.concatenate([np.arange(store.episode_starts[e], store.episode_ends[e]) for e in episodes])
        for k, row in enumerate(np.sort(rng.choice(rows, size=min(per_policy, len(rows)), replace=False))):
            e = int(np.searchsorted(store.episode_ends, row, side="right"))
            frame = as_rgb(store.read("obs", int(row), int(row) + 1)[0])
            image = Image.fromarray(frame).resize((w * scale, h * scale), Image.NEAREST)
            values = {n: float(store.read(f"labels/{n}", int(row), int(row) + 1)[0]) for n in names}
            draw_markers(ImageDraw.Draw(image), groups, values, scale, (h, w))
            x0 = head + k * (cell_w + 4)
            sheet.paste(image, (x0, y0))
            draw.text((x0, y0 + h * scale + 2), f"ep {e} t {int(row - store.episode_starts[e])}", fill=DIM, font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(out, buf.getvalue())
    return {"path": out, "policies": policies, "per_policy": per_policy, "seed": seed, "markers": names,
            "markers_from": source}


def _stem(store: EpisodeStore) -> str:
    name = os.path.basename(os.path.normpath(store.path)) or "store"
    return name[:-5] if name.endswith(".zarr") else name


def _write_mp4(path: str, pictures, fps: int, width: int, height: int) -> None:
    import av

    def write(f):
        container = av.open(f, "w", format="mp4")
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "20"}
        for picture in pictures:
            for packet in stream.encode(av.VideoFrame.from_image(picture)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()

    atomic_write(path, write)


def _write_gif(path: str, pictures, fps: int, width: int, height: int) -> None:
    from PIL import Image

    frames = [p.convert("P", palette=Image.Palette.ADAPTIVE, colors=255) for p in pictures]  # 1 byte a pixel while held
    atomic_write(path, lambda f: frames[0].save(f, format="GIF", save_all=True, append_images=frames[1:],
                                                duration=max(20, round(1000 / fps)), loop=0))
