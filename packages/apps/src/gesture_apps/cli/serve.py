"""`gesture serve`: a local web page that streams speech (a wav file or the microphone) to a
GestureLSM bundle and draws the skeleton moving in time with the sound."""

from __future__ import annotations

import argparse
import ipaddress
import math
import socket
import sys

from gesture_apps.errors import CLIError


def add_serve_command(sub) -> None:
    """Register ``gesture serve``."""
    p = sub.add_parser(
        "serve",
        help="serve a live page: speech in, skeleton out, in the browser",
        description=(
            "Start a local web server whose page streams a wav file or the microphone to the "
            "model chunk by chunk and draws the generated skeleton in time with the sound. "
            "Loopback only by default; the page and its websocket protocol are described in "
            "gesture_apps.serve.app. Needs the `serve` extra (pip install 'gesture-apps[serve]')."
        ),
    )
    p.add_argument(
        "--checkpoint",
        "--bundle",
        dest="checkpoint",
        required=True,
        help="a GestureLSM bundle (one-step student for live speed), or its run folder",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one)")
    p.add_argument(
        "--chunk-s", type=float, default=0.5, help="seconds of audio per generation (default 0.5)"
    )
    p.add_argument(
        "--lookahead-s",
        type=float,
        help="seconds of audio heard past each chunk (default: the model's)",
    )
    p.add_argument(
        "--device", help="torch device: cpu, cuda, cuda:1... (default: cuda when present, else cpu)"
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be between 0 and 65535, found {args.port}")
    if not (math.isfinite(args.chunk_s) and args.chunk_s > 0):
        raise CLIError(f"--chunk-s must be a positive number of seconds, found {args.chunk_s}")
    if args.lookahead_s is not None and not (
        math.isfinite(args.lookahead_s) and args.lookahead_s >= 0
    ):
        raise CLIError(f"--lookahead-s must be 0 or more seconds, found {args.lookahead_s}")
    try:
        import uvicorn

        from gesture_apps.serve import create_app
    except ImportError as e:
        raise CLIError(
            f"gesture serve needs the serve extra: pip install 'gesture-apps[serve]' ({e.name} "
            "is missing)"
        ) from None
    from gesture_apps.systems.gesturelsm.export import load_lsm
    from gesture_apps.systems.gesturelsm.streaming import GestureStream

    sock = _bind(args.host, args.port)  # first: a taken port fails before the model loads
    try:
        bundle = load_lsm(args.checkpoint, device=args.device)

        def stream_factory(sample_rate: int) -> GestureStream:
            return GestureStream(
                bundle, chunk_s=args.chunk_s, lookahead_s=args.lookahead_s, sample_rate=sample_rate
            )

        probe = stream_factory(16000)  # bad stream options fail here, before serving
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    # the stream rounds chunk and look-ahead to whole latent frames: show what it uses
    print(
        f"gesture serve: http://{shown}:{port}/ (chunk {probe.chunk_s:.3g} s, look-ahead "
        f"{probe.lookahead_s:.3g} s; Ctrl-C to stop)",
        flush=True,
    )
    server = uvicorn.Server(uvicorn.Config(create_app(stream_factory), log_level="warning"))
    server.run(sockets=[sock])
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so that a taken port is a one-line error, not a server
    that logs a traceback and exits 1."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise CLIError(f"--host {host}: cannot resolve it ({e.strerror or e})") from None
    family, _, _, _, address = infos[0]
    if not ipaddress.ip_address(address[0]).is_loopback:
        # the page has no authentication: anyone who can reach the port can use the model
        print(
            f"gesture serve: warning: {host} is not a loopback address; anyone who can reach "
            "it can use the page",
            file=sys.stderr,
        )
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise CLIError(f"--port {port}: cannot listen on {host} ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock
