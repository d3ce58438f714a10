"""``dvis serve``'s settings: the flags and the limits, checked once at start."""
from __future__ import annotations

from dataclasses import dataclass

from dvis.errors import DvisError

#: Frame formats: file extension for OpenCV, MIME type for the page.
FORMATS = {"jpeg": (".jpg", "image/jpeg"), "webp": (".webp", "image/webp"), "png": (".png", "image/png")}


@dataclass(frozen=True)
class WebConfig:
    """Server settings (``dvis serve`` flags)."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str = ""  # "" only on loopback: no token asked (refused for other hosts)
    frame_format: str = "jpeg"  # jpeg, webp or png (lossless, larger)
    quality: int = 85  # JPEG / WebP quality
    max_message_bytes: int = 4096  # a text message from the page
    max_camera_bytes: int = 1 << 20  # one browser camera frame (JPEG)
    max_upload_bytes: int = 16 << 20  # one uploaded image file
    max_uploads: int = 64  # uploads kept in memory per server
    # An upload is kept downscaled to this many pixels on its longer side (or the model input's or the
    # input pane's, if larger): 64 uploads hold at most 64 x 3 MiB, whatever size they came in at.
    upload_side: int = 1024
    max_messages_per_s: float = 200.0  # per tab; the excess is dropped
    ack_timeout_s: float = 2.0  # a tab that does not ack a frame gets the next one after this
    header_timeout_s: float = 10.0  # a connection gets this long to send a whole request head
    keep_alive_s: float = 5.0  # an idle HTTP connection between requests is closed after this
    max_connections: int = 100  # open connections (tabs included); more are closed at once

    def check(self) -> None:
        """Refuse settings the server cannot run with, in one line naming the flag."""
        if not 0 <= self.port <= 65535:
            raise DvisError(f"--port {self.port}: a port is 0-65535 (0 picks a free one)")
        if not 1 <= self.quality <= 100:
            raise DvisError(f"--quality {self.quality}: JPEG / WebP quality is 1-100")
        if self.frame_format not in FORMATS:
            raise DvisError(f"--frame-format {self.frame_format}: choose {', '.join(FORMATS)}")
        if not self.token and not is_loopback(self.host):
            raise DvisError(f"--host {self.host} without a token would let anyone on the network run the "
                            "model and read the image folder; drop --no-token")


def is_loopback(host: str) -> bool:
    """``host`` (an address or name to listen on) reaches only this machine."""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
