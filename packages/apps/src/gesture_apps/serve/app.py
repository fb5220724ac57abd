"""The live page's ASGI app: speech streamed in over a websocket, skeleton frames streamed out.

Routes: ``GET /`` the page, ``GET /static/...`` its script and style, ``WS /ws`` the stream.

Protocol on ``/ws`` (text messages are JSON objects):

client -> server

1. ``{"type": "start", "sample_rate": 16000}`` first: the rate (an integer, Hz) of the audio
   that follows; the model resamples other rates.
2. binary messages: an int64 little-endian sample offset (the index of the message's first
   sample in the stream, at that rate), then float32 little-endian mono samples. A gap (an
   offset past the samples sent so far: a dropped chunk) is filled with silence, an overlap is
   dropped.
3. ``{"type": "end"}``: the utterance is over.

server -> client

- ``{"type": "ready", "fps": 30, "parents": [55 ints], "chunk_s": 0.5, "lookahead_s": ...}``
  after ``start`` (``parents``: the SMPL-X kinematic tree, -1 for the root);
- ``{"type": "frames", "start": i, "joints": [[[x, y, z] x 55] x n], "latency_ms": ms}``
  whenever the model gives frames: frames ``i .. i+n-1`` as SMPL-X joints in metres (y up,
  4 decimals), ``latency_ms`` the model's compute time for that message;
- ``{"type": "done", "frames": total}`` after ``end``; the server then closes (code 1000);
- ``{"type": "error", "message": "..."}`` on a bad message (bad JSON, audio before ``start``,
  a bad sample rate, non-finite samples, a byte count that is not 8 + 4k), then a close with
  1003 (unusable data) or 1008 (messages out of order). An internal failure closes with 1011.

A client that disconnects mid-stream just drops its stream. Generation is CPU-bound: it runs in
a worker thread, so the event loop keeps serving other clients, one model call at a time (the
streams share one model; a lock interleaves clients chunk by chunk).
"""

from __future__ import annotations

import html
import json
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from gesture_apps.data.motion import Motion, joints_approx
from gesture_apps.errors import GenerationError, one_line
from gesture_data.skeleton import SMPLX_PARENTS

log = logging.getLogger(__name__)

PAGE = Path(__file__).resolve().parent / "page"
RATES = (8000, 192000)  # accepted sample rates (Hz): telephone to studio
# a gap is filled with silence; an offset far past the audio sent so far would make the server
# allocate and generate that much silence, so it is refused instead
MAX_GAP_S = 30.0
DECIMALS = 4  # joint coordinates in metres: 0.1 mm is below what a drawing can show

UNUSABLE, OUT_OF_ORDER, INTERNAL = 1003, 1008, 1011


class StreamLike(Protocol):
    """What ``stream_factory(sample_rate)`` returns: one utterance's streaming generator
    (:class:`gesture_apps.systems.gesturelsm.streaming.GestureStream` is one)."""

    sample_rate: int
    fps: int
    chunk_s: float
    lookahead_s: float

    def push(self, audio: np.ndarray, *, at: int | None = None) -> Motion: ...

    def flush(self) -> Motion: ...


class _Refused(Exception):
    """A client message the server will not take: sent back as an error, then closed."""

    def __init__(self, message: str, code: int = UNUSABLE):
        super().__init__(message)
        self.code = code


def create_app(
    stream_factory: Callable[[int], StreamLike],
    *,
    page_title: str = "gesture: live speech to gesture",
) -> Starlette:
    """The page and its websocket; ``stream_factory(sample_rate)`` makes a new stream per
    connection (called in a worker thread, like every model call)."""
    lock = threading.Lock()  # the streams share one model: one call at a time
    page = (PAGE / "index.html").read_text(encoding="utf-8")
    page = page.replace("{{title}}", html.escape(page_title))

    def compute(step: Callable[[], Motion]) -> tuple[np.ndarray | None, float]:
        """(joints (n, 55, 3) or None when no frames, the model's milliseconds) of one push or
        flush."""
        with lock:
            start = time.perf_counter()
            motion = step()
            ms = 1000 * (time.perf_counter() - start)
        # joints outside the lock: they need no model, and the next client should not wait
        joints = joints_approx(motion.poses, motion.trans) if motion.num_frames else None
        return joints, ms

    def make(sample_rate: int) -> StreamLike:
        with lock:  # a new stream may run the shared networks too (e.g. cached conditions)
            return stream_factory(sample_rate)

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await _Session(ws, make, compute).run()
        except WebSocketDisconnect:
            log.debug("client left mid-stream; its stream is dropped")
        except _Refused as e:
            log.info("refused a client: %s", e)
            await _close(ws, str(e), e.code)
        except Exception as e:  # a model failure must not take the server (or others) down
            log.exception("stream failed")
            await _close(ws, f"internal error: {one_line(e, 200)}", INTERNAL)

    return Starlette(
        routes=[
            Route("/", index),
            Mount("/static", StaticFiles(directory=PAGE), name="static"),
            WebSocketRoute("/ws", stream),
        ]
    )


async def _close(ws: WebSocket, message: str, code: int) -> None:
    try:
        await ws.send_text(json.dumps({"type": "error", "message": message}))
        await ws.close(code)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client is already gone: nobody to tell


class _Session:
    """One websocket connection: its stream and the counts the protocol reports."""

    def __init__(self, ws: WebSocket, factory: Callable[[int], StreamLike], compute):
        self.ws, self.factory, self.compute = ws, factory, compute
        self.stream: StreamLike | None = None
        self.received = 0  # samples taken so far (offset of the first one not yet received)
        self.sent = 0  # frames sent so far

    async def run(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            if message.get("text") is not None:
                if await self._text(message["text"]):
                    return
            elif message.get("bytes") is not None:
                await self._audio(message["bytes"])

    async def _text(self, text: str) -> bool:
        """Handle a JSON message; True when the stream is over."""
        try:
            body = json.loads(text)
        except ValueError:
            raise _Refused("bad JSON in a text message") from None
        kind = body.get("type") if isinstance(body, dict) else None
        if kind == "start":
            if self.stream is not None:
                raise _Refused("'start' sent twice", OUT_OF_ORDER)
            rate = body.get("sample_rate")
            if type(rate) is not int or not RATES[0] <= rate <= RATES[1]:
                raise _Refused(
                    f"'sample_rate' must be an integer from {RATES[0]} to {RATES[1]} Hz, "
                    f"found {rate!r}"
                )
            try:
                self.stream = await run_in_threadpool(self.factory, rate)
            except GenerationError as e:  # e.g. a rate the model refuses
                raise _Refused(one_line(e, 200)) from None
            s = self.stream
            await self._send(
                type="ready",
                fps=s.fps,
                parents=list(SMPLX_PARENTS),
                chunk_s=s.chunk_s,
                lookahead_s=s.lookahead_s,
            )
            return False
        if kind == "end":
            if self.stream is None:
                raise _Refused("'end' before 'start'", OUT_OF_ORDER)
            await self._frames(self.stream.flush)
            await self._send(type="done", frames=self.sent)
            await self.ws.close(1000)
            return True
        raise _Refused(f"unknown message type {kind!r} (expected 'start' or 'end')", OUT_OF_ORDER)

    async def _audio(self, data: bytes) -> None:
        if self.stream is None:
            raise _Refused("audio before 'start'", OUT_OF_ORDER)
        if len(data) < 8 or (len(data) - 8) % 4:
            raise _Refused(
                f"an audio message is an int64 offset + float32 samples (8 + 4k bytes), "
                f"found {len(data)} bytes"
            )
        at = int(np.frombuffer(data, "<i8", count=1)[0])
        samples = np.frombuffer(data, "<f4", offset=8).astype(np.float32)
        if at < 0:
            raise _Refused(f"negative sample offset {at}")
        rate = self.stream.sample_rate
        if at - self.received > MAX_GAP_S * rate:
            raise _Refused(
                f"sample offset {at} leaves a gap of more than {MAX_GAP_S:g} s after the "
                f"{self.received} samples received"
            )
        if not np.isfinite(samples).all():
            raise _Refused(f"non-finite audio samples in the message at offset {at}")
        if samples.size:
            await self._frames(partial(self.stream.push, samples, at=at))
            self.received = max(self.received, at + samples.size)

    async def _frames(self, step: Callable[[], Motion]) -> None:
        try:
            joints, ms = await run_in_threadpool(self.compute, step)
        except GenerationError as e:
            raise _Refused(one_line(e, 200)) from None
        if joints is None:
            return  # nothing new yet (the model waits for its chunk and look-ahead)
        await self._send(
            type="frames",
            start=self.sent,
            joints=np.round(joints, DECIMALS).tolist(),
            latency_ms=round(ms, 1),
        )
        self.sent += len(joints)

    async def _send(self, **message) -> None:
        await self.ws.send_text(json.dumps(message, separators=(",", ":")))
