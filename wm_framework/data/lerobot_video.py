"""MP4 files of a LeRobot v3 dataset: several episodes per file, frames addressed by time.

LeRobot v3 concatenates the episodes of one camera into one MP4 per file index; an
episode's frames are the ones at ``from_timestamp + timestamp`` (its row in
``meta/episodes`` plus the per-frame ``timestamp`` column). Here frames are written with
presentation times ``k / fps`` (k counts frames in the file), and read by decoding a
file once, in order, matching each asked time to the nearest decoded frame.

Codecs (``CODECS``), both through the FFmpeg that PyAV's wheels bundle:

* ``h264``: libx264, yuv420p, CRF 18, a keyframe every 2 frames (LeRobot's readers seek
  to every sampled frame). What players and LeRobot expect; lossy: chroma is stored at
  half resolution, so small saturated sprites lose colour (docs/datasets.md gives the
  loss measured by the round-trip test). yuv420p needs even sizes: an odd height or
  width is padded by repeating the last row/column, and the importer crops it away.
* ``lossless``: libx264rgb, RGB, QP 0: bit-exact frames, any size. FFmpeg-based readers
  (PyAV, torchcodec: LeRobot's) decode it; browsers do not.
"""

from __future__ import annotations

import fractions
import os

import numpy as np

from wm_framework.errors import WMUsageError

#: name -> (FFmpeg encoder, pixel format, encoder options)
CODECS = {
    "h264": ("libx264", "yuv420p", {"crf": "18", "g": "2"}),
    "lossless": ("libx264rgb", "rgb24", {"qp": "0", "g": "2"}),
}
#: Largest decoded frame accepted from an untrusted video (as for imported images).
MAX_VIDEO_PIXELS = 4096 * 4096


def padded_size(height: int, width: int, codec: str) -> tuple[int, int]:
    """The (height, width) the video of ``codec`` holds for frames of this size."""
    if CODECS[codec][1] == "yuv420p":
        return height + height % 2, width + width % 2
    return height, width


def to_rgb(frames: np.ndarray) -> np.ndarray:
    """uint8 frames [N, H, W, 1|3] -> [N, H, W, 3] (grey replicated: MP4 holds colour)."""
    if frames.shape[-1] == 1:
        return np.repeat(frames, 3, axis=-1)
    if frames.shape[-1] != 3:
        raise WMUsageError(f"frames with {frames.shape[-1]} channels cannot be stored as MP4 video; 1 (grey) or 3 (RGB) can")
    return frames


class VideoWriter:
    """Append frames to one MP4 file at ``fps``; ``frames`` counts what it holds."""

    def __init__(self, path: str, fps: int, height: int, width: int, codec: str = "h264"):
        import av

        if codec not in CODECS:
            raise WMUsageError(f"unknown video codec '{codec}'; codecs: {', '.join(CODECS)}")
        encoder, pix_fmt, options = CODECS[codec]
        self.path, self.frames = path, 0
        self.height, self.width = padded_size(height, width, codec)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._container = av.open(path, "w")
        self._stream = self._container.add_stream(encoder, rate=int(fps))
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = pix_fmt
        self._stream.time_base = fractions.Fraction(1, int(fps))  # pts k is time k / fps exactly
        self._stream.options = dict(options)

    def append(self, frames: np.ndarray) -> None:
        """Encode uint8 frames [N, H, W, 1|3] (padded to the video's size when it is larger)."""
        import av

        frames = to_rgb(np.asarray(frames, np.uint8))
        pad_h, pad_w = self.height - frames.shape[1], self.width - frames.shape[2]
        if pad_h or pad_w:
            frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = self.frames
            self.frames += 1
            for packet in self._stream.encode(vf):
                self._container.mux(packet)

    def size_bytes(self) -> int:
        return os.path.getsize(self.path) if os.path.exists(self.path) else 0

    def close(self) -> None:
        for packet in self._stream.encode():  # flush the encoder's delayed frames
            self._container.mux(packet)
        self._container.close()


class VideoReader:
    """Frames of one MP4 file by presentation time, decoded once in order.

    ``take(times)`` returns the frames nearest to ``times`` (seconds, ascending within a
    call); a time farther than ``tolerance_s`` from every frame is a one-line error. A
    call asking for an earlier time than the last one decoded restarts the decoder, so
    episodes may be read in any order (in file order it decodes every frame once).
    """

    def __init__(self, path: str, tolerance_s: float, what: str):
        self.path, self.tolerance_s, self.what = path, float(tolerance_s), what
        self._container = None
        self._open()

    def _open(self) -> None:
        import av

        self.close()
        try:
            self._container = av.open(self.path)
            stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError, OSError) as e:
            raise WMUsageError(f"{self.what}: '{self.path}' is not a readable video ({type(e).__name__})") from e
        if stream.codec_context.width * stream.codec_context.height > MAX_VIDEO_PIXELS:
            raise WMUsageError(f"{self.what}: frames of {stream.codec_context.width}x{stream.codec_context.height} "
                               f"pixels; at most {MAX_VIDEO_PIXELS} (4096x4096) are supported")
        self._frames = self._decode(stream)
        self._current = None  # (time, frame) last decoded

    def _decode(self, stream):
        import av

        try:
            for frame in self._container.decode(stream):
                if frame.time is None:
                    raise WMUsageError(f"{self.what}: '{self.path}' has a frame without a timestamp")
                yield float(frame.time), frame.to_ndarray(format="rgb24")
        except av.FFmpegError as e:
            raise WMUsageError(f"{self.what}: '{self.path}' does not decode ({type(e).__name__}: {e})".splitlines()[0]) from e

    def take(self, times) -> np.ndarray:
        tol, out = self.tolerance_s, []
        for t in np.asarray(times, np.float64):
            if self._current is not None and t < self._current[0] - tol:
                self._open()  # asked for an earlier time: decode from the start again
            while self._current is None or self._current[0] < t - tol:
                self._current = next(self._frames, None)
                if self._current is None:
                    raise WMUsageError(f"{self.what}: '{self.path}' ends before time {t:.4f} s")
            if abs(self._current[0] - t) > tol:
                raise WMUsageError(f"{self.what}: '{self.path}' has no frame at time {t:.4f} s "
                                   f"(nearest {self._current[0]:.4f} s)")
            out.append(self._current[1])
        return np.stack(out) if out else np.zeros((0, 0, 0, 3), np.uint8)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
