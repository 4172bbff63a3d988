"""Load track GLBs in three.js inside a real headless browser (Debian's ``chromium``) and
report what the page found: per file whether it holds a skinned mesh, its bones, the
animation's duration and the bones' world positions at one source frame; optionally a
PNG of the view from the recording camera.

    python tools/glb_browser.py REC_DIR/track_0001.glb [...] --frame 120 [--png out.png]

The page (``tests/web/glb_page.html``) and three.js (``npm ci --prefix tests/web``) are
served by this script from 127.0.0.1 on a free port; chromium runs headless with
SwiftShader's software WebGL, posts its result back, and is stopped.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlencode

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "tests" / "web"
THREE = WEB / "node_modules" / "three"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DEFAULT_HFOV_DEG = 63.0  # calibration.camera.DEFAULT_HFOV_DEG: the run's camera without a camera file


class BrowserUnavailable(RuntimeError):
    """chromium or three.js is not installed here."""


def find_browser() -> str:
    """Path of a chromium executable; raises :class:`BrowserUnavailable` naming what to install."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserUnavailable("no chromium found: apt-get install chromium")


def _handler(files: dict[str, Path], done: threading.Event, result: dict):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet: the caller reports
            pass

        def _send(self, body: bytes, kind: str, status: int = 200) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = unquote(self.path.split("?", 1)[0])
            if path == "/":
                return self._send((WEB / "glb_page.html").read_bytes(), "text/html; charset=utf-8")
            if path in files:
                return self._send(files[path].read_bytes(), "model/gltf-binary")
            if path.startswith("/three/"):
                target = (THREE / path[len("/three/"):]).resolve()
                if target.is_file() and THREE.resolve() in target.parents:  # nothing outside three.js
                    return self._send(target.read_bytes(), "text/javascript; charset=utf-8")
            self._send(b"not found", "text/plain", 404)

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/result":
                return self._send(b"not found", "text/plain", 404)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            result.update(json.loads(body))
            self._send(b"ok", "text/plain")
            done.set()

    return Handler


def load_in_browser(glbs: list[Path], frame: int, *, width: int = 1280, height: int = 720,
                    hfov_deg: float = DEFAULT_HFOV_DEG, timeout: float = 120.0) -> dict:
    """Serve the page and ``glbs`` on 127.0.0.1, open it in headless chromium, and return
    the page's result (see ``tests/web/glb_page.html``): ``files`` (per GLB: skinnedMesh,
    bones, joints, duration, time, ...), and ``png`` (bytes) unless WebGL failed
    (``renderError``). Raises :class:`BrowserUnavailable` without chromium or three.js,
    TimeoutError if the page does not answer within ``timeout`` seconds."""
    browser = find_browser()
    if not (THREE / "build" / "three.module.js").is_file():
        raise BrowserUnavailable(f"three.js is not installed in {WEB}: npm ci --prefix tests/web")
    files = {f"/glb/{i}/{quote(Path(p).name)}": Path(p) for i, p in enumerate(glbs)}
    done, result = threading.Event(), {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files, done, result))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    profile = tempfile.mkdtemp(prefix="glb_browser_")
    query = urlencode([*(("glb", url) for url in files), ("frame", frame), ("hfov", hfov_deg),
                       ("w", width), ("h", height)])
    url = f"http://127.0.0.1:{server.server_address[1]}/?{query}"
    # Root in a container needs --no-sandbox; SwiftShader gives WebGL without a GPU.
    cmd = [browser, "--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
           "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
           f"--user-data-dir={profile}", f"--window-size={width},{height}", url]
    # Its own process group: chromium's helper processes go with it.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if not done.wait(timeout):
            raise TimeoutError(f"the page did not report within {timeout:.0f} s ({url})")
    finally:
        _stop(proc)
        server.shutdown()
        server.server_close()
        shutil.rmtree(profile, ignore_errors=True)
    if "png" in result:
        result["png"] = base64.b64decode(result["png"].split(",", 1)[1])
    return result


def _stop(proc: subprocess.Popen) -> None:
    """Stop the chromium started here and its helpers (its process group)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("glb", nargs="+", type=Path)
    parser.add_argument("--frame", type=int, required=True, help="source frame index to pose the tracks at")
    parser.add_argument("--png", type=Path, help="write the view from the recording camera here")
    parser.add_argument("--size", default="1280x720", help="view size WxH (default 1280x720)")
    parser.add_argument("--hfov", type=float, default=DEFAULT_HFOV_DEG,
                        help=f"the recording camera's horizontal field of view (default {DEFAULT_HFOV_DEG})")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    result = load_in_browser(args.glb, args.frame, width=width, height=height, hfov_deg=args.hfov)
    if "error" in result:
        sys.exit(f"the page failed: {result['error']}")
    png = result.pop("png", None)
    if args.png and png:
        args.png.write_bytes(png)
    for f in result["files"]:
        f.pop("joints")
        f["bones"] = len(f["bones"])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
