"""`gesture serve`: the websocket protocol against the streaming model (uneven chunks give the
offline frames, bad messages get one-line errors, a client that leaves or two at once do not
disturb the others), the command line, and the page in headless Chromium."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import uvicorn
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from gesture_apps import main
from gesture_apps.data.motion import joints_approx
from gesture_apps.serve import create_app
from gesture_apps.systems.gesturelsm.export import load_lsm
from gesture_apps.systems.gesturelsm.streaming import GestureStream
from gesture_data.datasets.synthetic import make_clip
from gesture_data.skeleton import SMPLX_PARENTS

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    # the microphone button: Chromium's fake capture device (a beep) and no permission prompt
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
SR = 16000
CHUNK_S = 0.5
SECONDS = 3.0
# The server sends joints rounded to 4 decimals: measured at most 5.007e-5 off (float32 values
# near 1 m). The stream itself measured exactly equal (max diff 0.0) across chunkings of 160 to
# 48000 samples and 1 or 2 torch threads, so the rounding plus 1e-6 is the bound.
JOINT_ATOL = 5e-5 + 1e-6
# one 10 ms piece, a 2 s piece and odd sizes between (samples at 16 kHz)
UNEVEN = [160, 32000, 4321, 1600, 977, 12000, 2500]


# ---------------------------------------------------------------- model, audio, reference


DEMO_STUDENT = Path(__file__).resolve().parent / "data" / "demo_student"


@pytest.fixture(scope="module")
def bundle():
    """The demo's trained one-step student (tiny GestureLSM; data/demo_student/README.md)."""
    return load_lsm(DEMO_STUDENT)


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    """Two different 3 s eSpeak utterances from the synthetic corpus, float32 at 16 kHz."""
    clips = [make_clip(i, SECONDS, seed=5) for i in (0, 1)]
    assert all(c.sample_rate == SR for c in clips)
    return [c.audio.astype(np.float32) for c in clips]


@pytest.fixture(scope="module")
def app(bundle):
    return create_app(lambda sr: GestureStream(bundle, chunk_s=CHUNK_S, sample_rate=sr))


_OFFLINE: dict[tuple[int, bytes], np.ndarray] = {}


def offline_joints(bundle, audio: np.ndarray) -> np.ndarray:
    """(T, 55, 3) joints of the same stream fed the whole recording at once (each recording
    once per run: several tests compare with the same one)."""
    key = (id(bundle), audio.tobytes())
    if key not in _OFFLINE:
        _OFFLINE[key] = _offline_joints(bundle, audio)
    return _OFFLINE[key]


def _offline_joints(bundle, audio: np.ndarray) -> np.ndarray:
    stream = GestureStream(bundle, chunk_s=CHUNK_S, sample_rate=SR)
    parts = [stream.push(audio), stream.flush()]
    poses = np.concatenate([m.poses for m in parts])
    trans = np.concatenate([m.trans for m in parts])
    return joints_approx(poses, trans)


def packet(at: int, samples: np.ndarray) -> bytes:
    return np.int64(at).astype("<i8").tobytes() + samples.astype("<f4").tobytes()


def pieces(n: int, sizes=UNEVEN):
    """(start, stop) of consecutive pieces of ``n`` samples, cycling through ``sizes``."""
    start, i = 0, 0
    while start < n:
        stop = min(n, start + sizes[i % len(sizes)])
        yield start, stop
        start, i = stop, i + 1


def collect(ws) -> tuple[np.ndarray, dict]:
    """Read frames until ``done``: (joints (T, 55, 3), the done message); checks each frames
    message starts where the previous one ended and is not empty."""
    frames, done = [], None
    while done is None:
        msg = ws.receive_json()
        assert msg["type"] in ("frames", "done"), msg
        if msg["type"] == "done":
            done = msg
            break
        assert msg["start"] == sum(len(f) for f in frames) and len(msg["joints"]) > 0
        assert msg["latency_ms"] >= 0
        frames.append(np.asarray(msg["joints"], np.float32))
    joints = np.concatenate(frames) if frames else np.zeros((0, 55, 3), np.float32)
    assert done["frames"] == len(joints)
    return joints, done


def start(ws, rate: int = SR) -> dict:
    ws.send_json({"type": "start", "sample_rate": rate})
    ready = ws.receive_json()
    assert ready["type"] == "ready", ready
    return ready


# ---------------------------------------------------------------- the websocket protocol


def test_uneven_chunks_a_dropped_one_and_an_overlap_give_the_offline_frames(app, bundle, speech):
    audio = speech[0]
    spans = list(pieces(audio.size))
    dropped = spans[3]  # never sent: the server must fill it with silence
    heard = audio.copy()
    heard[dropped[0] : dropped[1]] = 0
    expected = offline_joints(bundle, heard)
    assert len(expected) == int(SECONDS * 30)  # floor(seconds * fps)
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ready = start(ws)
        assert ready["fps"] == 30 and ready["parents"] == list(SMPLX_PARENTS)
        reference = GestureStream(bundle, chunk_s=CHUNK_S)  # chunk_s is rounded to latents
        assert ready["chunk_s"] == reference.chunk_s > 0
        assert ready["lookahead_s"] == reference.lookahead_s > 0
        for i, (a, b) in enumerate(spans):
            if (a, b) == dropped:
                continue
            if i == 5:  # resend the last 100 samples before this piece: the overlap is dropped
                a -= 100
            ws.send_bytes(packet(a, audio[a:b]))
        ws.send_json({"type": "end"})
        joints, _ = collect(ws)
    assert joints.shape == expected.shape
    np.testing.assert_allclose(joints, expected, rtol=0, atol=JOINT_ATOL)
    # the model moved (a frozen or zero skeleton would also "match" a broken reference)
    assert np.ptp(joints[:, 20:22], axis=0).max() > 1e-3


BAD = [
    # (what, messages, expected close code, words the error names)
    ("bad JSON", ["{not json"], 1003, "JSON"),
    ("audio before start", [packet(0, np.zeros(160, np.float32))], 1008, "before 'start'"),
    ("rate as a string", [{"type": "start", "sample_rate": "16000"}], 1003, "sample_rate"),
    ("rate as a float", [{"type": "start", "sample_rate": 16000.0}], 1003, "sample_rate"),
    ("rate too low", [{"type": "start", "sample_rate": 100}], 1003, "sample_rate"),
    ("unknown type", [{"type": "stop"}], 1008, "unknown message type"),
    ("end before start", [{"type": "end"}], 1008, "before 'start'"),
    ("NaN samples", ["START", packet(0, np.full(160, np.nan, np.float32))], 1003, "non-finite"),
    ("odd byte count", ["START", packet(0, np.zeros(4, np.float32))[:-2]], 1003, "8 + 4k"),
    ("negative offset", ["START", packet(-5, np.zeros(160, np.float32))], 1003, "negative"),
    ("start twice", ["START", {"type": "start", "sample_rate": SR}], 1008, "twice"),
]


@pytest.mark.parametrize("what, messages, code, words", BAD, ids=[b[0] for b in BAD])
def test_a_bad_message_gets_one_error_line_and_the_server_serves_the_next_client(
    app, speech, what, messages, code, words
):
    with TestClient(app) as client:
        with client.websocket_connect("/ws") as ws:
            for m in messages:
                if m == "START":
                    start(ws)
                elif isinstance(m, bytes):
                    ws.send_bytes(m)
                elif isinstance(m, str):
                    ws.send_text(m)
                else:
                    ws.send_json(m)
            error = ws.receive_json()
            assert error["type"] == "error" and words in error["message"], error
            assert "\n" not in error["message"]
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == code
        with client.websocket_connect("/ws") as ws:  # the next client: 1 s, 30 frames
            start(ws)
            ws.send_bytes(packet(0, speech[1][:SR]))
            ws.send_json({"type": "end"})
            joints, _ = collect(ws)
            assert len(joints) == 30


def test_a_model_failure_is_reported_logged_once_and_the_server_goes_on(bundle, speech, caplog):
    def broken(rate: int) -> GestureStream:
        stream = GestureStream(bundle, chunk_s=CHUNK_S, sample_rate=rate)
        if broken.calls == 0:  # the first client's model fails; the next one's works

            def push(audio, *, at=None):
                raise RuntimeError("out of memory\nwhile decoding")

            stream.push = push
        broken.calls += 1
        return stream

    broken.calls = 0
    with caplog.at_level(logging.INFO), TestClient(create_app(broken)) as client:
        with client.websocket_connect("/ws") as ws:
            start(ws)
            ws.send_bytes(packet(0, speech[0][:SR]))
            assert ws.receive_json() == {
                "type": "error",
                "message": "internal error: out of memory while decoding",
            }
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 1011
        with client.websocket_connect("/ws") as ws:
            start(ws)
            ws.send_bytes(packet(0, speech[0][:SR]))
            ws.send_json({"type": "end"})
            assert len(collect(ws)[0]) == 30
    failures = [r for r in caplog.records if r.exc_info]
    assert len(failures) == 1 and "out of memory" in str(failures[0].exc_info[1])


def test_audio_at_another_rate_is_resampled(app, speech):
    import soxr

    audio = soxr.resample(speech[0][: 2 * SR], SR, 48000).astype(np.float32)
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        start(ws, 48000)
        for a, b in pieces(audio.size, [4800, 96000, 777]):  # 0.1 s, 2 s, odd (at 48 kHz)
            ws.send_bytes(packet(a, audio[a:b]))
        ws.send_json({"type": "end"})
        joints, _ = collect(ws)
    assert joints.shape == (60, 55, 3) and np.isfinite(joints).all()


def test_the_page_and_its_files_are_served_from_the_package_and_fetch_nothing_else():
    def never(rate):
        raise AssertionError("no stream is made for a page request")

    with TestClient(create_app(never, page_title="Demo <b>&</b>")) as client:
        page = client.get("/")
        assert (
            page.status_code == 200 and "<title>Demo &lt;b&gt;&amp;&lt;/b&gt;</title>" in page.text
        )
        for name, kind in [
            ("app.js", "javascript"),
            ("capture.js", "javascript"),
            ("style.css", "css"),
        ]:
            r = client.get(f"/static/{name}")
            assert r.status_code == 200 and kind in r.headers["content-type"]
            # no CDN, no font or script from the internet: the page works offline
            assert "http://" not in r.text and "https://" not in r.text
        assert "http://" not in page.text and "https://" not in page.text
        assert client.get("/static/missing.js").status_code == 404


def test_a_client_that_leaves_mid_stream_is_dropped_quietly(app, bundle, speech, caplog):
    audio = speech[1][: 5 * SR // 2]  # as in the two-clients test: one offline run for both
    with caplog.at_level(logging.DEBUG), TestClient(app) as client:
        with client.websocket_connect("/ws") as ws:
            start(ws)
            ws.send_bytes(packet(0, speech[0][: 2 * SR]))
            ws.receive_json()  # its first frames are on the way; then it goes
        with client.websocket_connect("/ws") as ws:
            start(ws)
            for a, b in pieces(audio.size, [SR // 2]):
                ws.send_bytes(packet(a, audio[a:b]))
            ws.send_json({"type": "end"})
            joints, _ = collect(ws)
    np.testing.assert_allclose(joints, offline_joints(bundle, audio), rtol=0, atol=JOINT_ATOL)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]


def test_two_clients_at_once_both_get_all_their_frames(app, bundle, speech):
    results: dict[int, np.ndarray] = {}
    both_started = threading.Barrier(2, timeout=60)

    lengths = {0: 3 * SR, 1: 5 * SR // 2}  # different lengths: each must get its own count

    def client_run(k: int, client: TestClient) -> None:
        audio = speech[k][: lengths[k]]
        with client.websocket_connect("/ws") as ws:
            start(ws)
            both_started.wait()  # from here on the two streams interleave on the server
            for a, b in pieces(audio.size, [SR // 5]):
                ws.send_bytes(packet(a, audio[a:b]))
            ws.send_json({"type": "end"})
            results[k] = collect(ws)[0]

    with TestClient(app) as client:
        threads = [threading.Thread(target=client_run, args=(k, client)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert sorted(results) == [0, 1]
    # each equals its own stream run alone: a state shared between the two (the noise
    # generator, the features, the emitted latents) would change both
    for k in (0, 1):
        expected = offline_joints(bundle, speech[k][: lengths[k]])
        assert len(results[k]) == lengths[k] * 30 // SR
        np.testing.assert_allclose(results[k], expected, rtol=0, atol=JOINT_ATOL)


# ---------------------------------------------------------------- the command line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_bad_input_is_one_line_and_status_2(bundle, tmp_path, capsys):
    missing = tmp_path / "no_bundle"
    cases = [
        (["--checkpoint", str(missing), "--port", "0"], str(missing)),
        (["--checkpoint", str(bundle.folder), "--chunk-s", "0"], "--chunk-s"),
        (["--checkpoint", str(bundle.folder), "--port", "70000"], "--port"),
    ]
    with socket.socket() as taken:  # a port another program listens on
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases.append((["--checkpoint", str(bundle.folder), "--port", port], f"--port {port}"))
        for argv, named in cases:
            assert main(["serve", *argv]) == 2, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and err.startswith("gesture: error:") and named in err


def test_serve_command_loads_once_prints_the_url_and_warns_off_loopback(
    bundle, monkeypatch, capsys
):
    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: served.append((self, sockets)))
    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        argv = ["serve", "--checkpoint", str(bundle.folder), "--host", host, "--port", "0"]
        assert main(argv) == 0
        out, err = capsys.readouterr()
        server, sockets = served.pop()
        port = sockets[0].getsockname()[1]
        sockets[0].close()
        probe = GestureStream(bundle, chunk_s=0.5)
        assert out.strip() == (
            f"gesture serve: http://{host}:{port}/ (chunk {probe.chunk_s:.3g} s, look-ahead "
            f"{probe.lookahead_s:.3g} s; Ctrl-C to stop)"
        )
        assert ("not a loopback address" in err) == warned and err.count("\n") == int(warned)
    with TestClient(server.config.app) as client:  # the app it would serve streams
        assert client.get("/").status_code == 200
        with client.websocket_connect("/ws") as ws:
            assert start(ws)["chunk_s"] == GestureStream(bundle, chunk_s=0.5).chunk_s


# ---------------------------------------------------------------- the page in a browser


@pytest.fixture(scope="module")
def live_server(app):
    """The app on a free loopback port, served by uvicorn in a background thread (its log
    records propagate, so caplog sees them)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    config = uvicorn.Config(app, log_config=None, log_level="info", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_a_real_server_survives_a_client_whose_connection_drops(live_server, speech, caplog):
    from websockets.sync.client import connect

    url = live_server.replace("http", "ws") + "/ws"
    with caplog.at_level(logging.INFO):
        with connect(url) as gone:
            gone.send(json.dumps({"type": "start", "sample_rate": SR}))
            assert json.loads(gone.recv(timeout=30))["type"] == "ready"
            gone.send(packet(0, speech[0][: 2 * SR]))
            gone.close_socket()  # the TCP connection drops: no close handshake
        with connect(url) as ws:
            ws.send(json.dumps({"type": "start", "sample_rate": SR}))
            ws.send(packet(0, speech[1][:SR]))
            ws.send(json.dumps({"type": "end"}))
            messages = [json.loads(m) for m in ws]  # until the server closes
        time.sleep(0.5)  # the dropped stream's push ends and finds its client gone
    assert messages[0]["type"] == "ready" and messages[-1] == {"type": "done", "frames": 30}
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]


DRAWS = ("on-time", "late")  # the page counts its draws of a frame on time or late
STATUS = "document.getElementById('status')"
FRAMES = f"Number({STATUS}.dataset.frames)"
# counts canvas pixels in the skeleton's colours: saturated ones (the page draws the figure's
# left side blue and right side orange on white; the centre line is grey, not counted)
COLOURED_PIXELS = """() => {
  const c = document.getElementById("stage");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 80) n++;
  }
  return n;
}"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_the_page_streams_a_wav_and_draws_the_skeleton(live_server, speech, tmp_path):
    from playwright.sync_api import sync_playwright

    wav = tmp_path / "speech.wav"
    sf.write(wav, speech[0][: 2 * SR], SR)  # 2 s: the page plays it in real time
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 760, "height": 900}, permissions=["microphone"]
            )
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(live_server + "/")
            assert page.title() == "gesture: live speech to gesture"
            assert page.evaluate(COLOURED_PIXELS) == 0  # nothing drawn before any frame
            page.set_input_files("#file", str(wav))
            page.wait_for_function(f"{STATUS}.dataset.done === '1'", timeout=30_000)
            status = page.locator("#status")
            assert status.get_attribute("data-frames") == "60"
            assert float(status.get_attribute("data-latency-ms")) >= 0
            assert "60 frames" in status.inner_text() and "latency" in status.inner_text()
            page.wait_for_timeout(300)  # a few animation frames after the last message
            coloured = page.evaluate(COLOURED_PIXELS)
            on_time, late = (int(page.get_attribute("#stage", f"data-{k}")) for k in DRAWS)
            shot = tmp_path / "serve_page.png"
            page.screenshot(path=str(shot))
            # the microphone: live chunks until Stop, then the last frames and done
            page.click("#mic")
            page.wait_for_function(f"{FRAMES} >= 15", timeout=30_000)
            page.click("#stop")
            page.wait_for_function(f"{STATUS}.dataset.done === '1'", timeout=30_000)
            assert int(status.get_attribute("data-frames")) >= 15
        finally:
            browser.close()
    if os.environ.get("GESTURE_SCREENSHOT_DIR"):
        keep = Path(os.environ["GESTURE_SCREENSHOT_DIR"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep / shot.name)
    assert not errors, errors
    # in time with the sound: each animation frame during playback draws the frame of that
    # moment (i at i/30 s) unless it has not come yet. Measured: 75-86 draws, none late, in 3
    # runs on the busy 2-core box (the sound waits for the first frames, so later ones, which
    # lag by as much, are back in time); a quarter late would mean the sync is broken
    assert on_time >= 20 and late <= 0.25 * (on_time + late), (on_time, late)
    # a drawn figure: limbs 5 px wide over ~1 m of arms and legs at ~400 px/m; the page's
    # skeleton measured ~5000 such pixels, an empty canvas 0
    assert coloured > 1000, coloured
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    saturated = (image.max(-1) - image.min(-1)) > 80
    assert saturated.sum() > 1000  # the screenshot shows it too
