"""The S3 range client and the whole-file Level-2 window reader (spxflow.ranges) against the
loopback S3 emulator: windows bit-identical to the cutouts' pixels, request/byte budgets,
replaced objects, transient faults, refusals, and the on-disk layout cache."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spxflow.archive.base import ArchiveError
from spxflow.photometry.cutout import CutoutError, read_cutout
from spxflow.ranges import (
    ConstantCache,
    ForbiddenLocation,
    LayoutCache,
    ObjectChanged,
    ObjectUnavailable,
    RangeClient,
    RangeReadError,
    key_from_url,
    read_window,
)
from spxflow.sim.wholefile import s3_key_of
from tests.test_s3_emulator import s3, url  # noqa: F401 - the shared emulator fixtures

POSITIONS = {"qr2": (150.25, 45.30), "qr3": (35.50, 48.10)}  # BrightStar (QR2), AGN (QR3)
CUT_ARCSEC = 250.0  # the cutout the windows are compared with (~41 px)
HALF = 6  # 13 px windows: the budget case
FAST = {"backoff_s": 0.005, "backoff_max_s": 0.05}


@pytest.fixture()
def srv(s3, url):  # noqa: F811 - the imported fixtures
    """The emulator with faults cleared and stats zeroed before and after the test (``url``)."""
    return s3


@pytest.fixture(scope="module")
def images(sim):
    """release -> (key, (ra, dec), did) of an image with the target well inside the frame."""
    out = {}
    for rel, pos in POSITIONS.items():
        table = sim.discover(*pos, 0.0)
        for _, row in table[table["obs_collection"] == f"spherex_{rel}"].iterrows():
            x, y, _ = sim.image_info(row["obs_publisher_did"]).world_to_pixel(*pos)
            if 40 < float(x) < 2000 and 40 < float(y) < 2000:
                out[rel] = (s3_key_of(row["access_url"]), pos, row["obs_publisher_did"])
                break
    assert set(out) == {"qr2", "qr3"}
    return out


@pytest.fixture(scope="module")
def constants():
    """Per-detector constants shared by the tests (the cold budget assumes them cached)."""
    return ConstantCache()


def client_for(server, **kw) -> RangeClient:
    return RangeClient(server.base_url, **{**FAST, **kw})


def read(client, images, rel, constants, layouts=None, half=HALF):
    key, pos, _ = images[rel]
    return read_window(
        client, key, *pos, half, CUT_ARCSEC, layouts=layouts or LayoutCache(), constants=constants
    )


def requests_seen(server) -> int:
    return server.stats.as_dict()["requests"]


# ------------------------------------------------------------------------------ equality
@pytest.mark.parametrize("rel", ["qr2", "qr3"])
@pytest.mark.parametrize("half", [HALF, 15])
def test_window_equals_cutout_pixels(srv, sim, images, constants, rel, half, tmp_path):
    key, pos, did = images[rel]
    w = read(client_for(srv), images, rel, constants, half=half).cutout
    path = tmp_path / "cut.fits"
    path.write_bytes(sim.cutout_bytes(did, *pos, CUT_ARCSEC))
    ref = read_cutout(path, *pos)
    h, wd = w.image.shape
    assert (h, wd) == (2 * half + 1, 2 * half + 1)
    ox, oy = int(w.origin[0] - ref.origin[0]), int(w.origin[1] - ref.origin[1])
    for name in ("image", "flags", "variance"):
        a, b = getattr(w, name), getattr(ref, name)[oy : oy + h, ox : ox + wd]
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    assert (w.obs_id, w.detector, w.layout, w.version) == (
        ref.obs_id, ref.detector, ref.layout, ref.version,
    )  # fmt: skip
    assert abs(w.x_parent - ref.x_parent) < 1e-9 and abs(w.y_parent - ref.y_parent) < 1e-9
    assert w.origin == (ref.origin[0] + ox, ref.origin[1] + oy)
    assert w.plane == ref.plane and w.psf.dtype == ref.psf.dtype
    assert w.psf.tobytes() == ref.psf.tobytes()
    assert w.flag_bits == ref.flag_bits and w.psf_model == ref.psf_model
    assert all(a.tobytes() == b.tobytes() for a, b in zip(w.wcs_wave, ref.wcs_wave, strict=True))
    assert (w.mjd, w.exptime_s, w.crval_w) == (ref.mjd, ref.exptime_s, ref.crval_w)
    assert w.path == key


# ------------------------------------------------------------------------------ budgets
@pytest.mark.parametrize("rel", ["qr2", "qr3"])
def test_budget_cold_and_warm(srv, images, constants, rel):
    client = client_for(srv)
    read(client, images, rel, constants)  # constants of this detector now cached
    layouts = LayoutCache()
    srv.stats.reset()
    cold = read(client, images, rel, constants, layouts)
    assert cold.requests <= 6 and cold.bytes <= 400_000, (cold.requests, cold.bytes)
    assert cold.rounds == (2 if rel == "qr2" else 3)
    warm = read(client, images, rel, constants, layouts)
    assert warm.requests <= 3 and warm.rounds == 1, warm.requests
    assert warm.bytes < cold.bytes and not warm.replaced and warm.etag == cold.etag
    assert requests_seen(srv) == cold.requests + warm.requests  # nothing uncounted
    assert warm.cutout.image.tobytes() == cold.cutout.image.tobytes()


# ------------------------------------------------------------------------------ replaced
def test_replaced_object_is_reread_and_flagged(srv, images, constants):
    client, layouts = client_for(srv), LayoutCache()
    key = images["qr2"][0]
    first = read(client, images, "qr2", constants, layouts)
    srv.replace(key)
    again = read(client, images, "qr2", constants, layouts)
    assert again.replaced and again.etag != first.etag
    assert again.cutout.image.tobytes() == first.cutout.image.tobytes()
    assert layouts.get(key).etag == again.etag
    status = srv.stats.as_dict()["status"]
    assert status.get("412", 0) >= 1
    after = read(client, images, "qr2", constants, layouts)
    assert not after.replaced and after.requests == 3


def test_replaced_between_rounds_of_a_cold_read(srv, images, constants):
    key = images["qr3"][0]
    srv.set_faults({"rules": [{"fault": "replace", "match": key.rsplit("/", 1)[1], "after": 1}]})
    w = read(client_for(srv), images, "qr3", constants)
    assert w.replaced and w.etag == srv.etag(key)[0]


# ------------------------------------------------------------------------------ faults
def test_transient_faults_are_retried(srv, images, constants):
    client = client_for(srv)
    clean = read(client, images, "qr3", constants)
    rules = [
        {"fault": f, "max_per_url": 1, **({"retry_after": 0} if f == "503" else {})}
        for f in ("503", "reset", "truncate", "500")
    ]
    srv.set_faults({"rules": rules})
    client.reset_stats()
    w = read(client, images, "qr3", constants)
    assert srv.stats.as_dict()["faults"] == {"503": 1, "reset": 1, "truncate": 1, "500": 1}
    assert client.stats()["retries"] == 4 and w.requests == clean.requests + 4
    assert w.bytes == clean.bytes  # a failed attempt's bytes never reach the result
    for name in ("image", "flags", "variance", "psf"):
        assert getattr(w.cutout, name).tobytes() == getattr(clean.cutout, name).tobytes()


def test_retries_exhausted_names_key_range_and_cause(srv, images):
    key = images["qr2"][0]
    srv.set_faults({"rules": [{"fault": "503", "permanent": True}]})
    client = client_for(srv, attempts=3)
    with pytest.raises(RangeReadError) as err:
        client.get(key, 100, 200)
    msg = str(err.value)
    assert key in msg and "[100, 200)" in msg and "3 attempts" in msg and "SlowDown" in msg
    assert err.value.attempts == 3 and requests_seen(srv) == 3


def test_403_404_are_object_unavailable(srv, images, constants):
    client = client_for(srv)
    missing = images["qr2"][0].replace(".fits", "_nope.fits")
    with pytest.raises(ObjectUnavailable) as err:
        client.get(missing, 0, 10)
    assert err.value.status == 404 and "NoSuchKey" in str(err.value)
    with pytest.raises(ObjectUnavailable) as err:
        client.get("private/thing.fits", 0, 10)
    assert err.value.status == 403 and "AccessDenied" in str(err.value)
    srv.set_faults({"rules": [{"fault": "403"}]})
    with pytest.raises(ObjectUnavailable, match="AccessDenied"):
        read(client, images, "qr3", constants)
    assert client.stats()["requests"] == 3  # one try each: no retries


def test_client_range_semantics(srv, images):
    client, key = client_for(srv), images["qr2"][0]
    size, etag = client.head(key)
    tail = client.get(key, size - 10, size + 1000)  # clamped at the end, as S3 does
    assert (tail.start, tail.total, len(tail.data), tail.etag) == (size - 10, size, 10, etag)
    assert client.get(key, 0, 9, if_match=etag).data == b"SIMPLE  ="
    with pytest.raises(ObjectChanged):
        client.get(key, 0, 9, if_match='"other"')
    with pytest.raises(RangeReadError, match="416"):
        client.get(key, size + 5, size + 10)
    stats = client.stats()  # bytes: every body received, the XML error documents included
    assert stats["requests"] == stats["keys"][key]["requests"] == 5 and stats["bytes"] > 19


def test_ignored_range_whole_object_is_sliced():
    body = bytes(range(256)) * 4

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 - ignores Range, as some servers do
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", '"x"')
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        got = RangeClient(f"http://127.0.0.1:{server.server_address[1]}").get("qr2/a", 10, 20)
        assert (got.data, got.start, got.total, got.etag) == (body[10:20], 10, 1024, '"x"')
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------ locations
def test_foreign_locations_are_never_fetched(srv, images, constants):
    client = client_for(srv)
    host = srv.base_url.split("//")[1]
    key = images["qr2"][0]
    before = requests_seen(srv)
    for bad in (
        f"http://{host}/{key}", f"//{host}/{key}", "qr2/../qr3/x.fits", f"https://evil/{key}",
    ):  # fmt: skip
        with pytest.raises(ForbiddenLocation):
            client.get(bad, 0, 10)
        with pytest.raises(ForbiddenLocation):
            read_window(client, bad, 0, 0, HALF, CUT_ARCSEC, layouts=LayoutCache(),
                        constants=constants)  # fmt: skip
    with pytest.raises(ForbiddenLocation):
        key_from_url(f"http://localhost:1/{key}", srv.base_url)
    assert key_from_url(f"{srv.base_url}/{key}", srv.base_url) == key
    other = RangeClient(srv.base_url, allowed_hosts=["nasa-irsa-spherex.s3.amazonaws.com"])
    with pytest.raises(ForbiddenLocation):
        other.get(key, 0, 10)
    assert isinstance(ForbiddenLocation("x"), ArchiveError)
    assert requests_seen(srv) == before  # no request reached the server


def test_off_frame_target_is_cutout_error(srv, images, constants):
    key, _, _ = images["qr2"]
    with pytest.raises(CutoutError) as err:
        read_window(client_for(srv), key, 0.0, -89.0, HALF, CUT_ARCSEC, layouts=LayoutCache(),
                    constants=constants)  # fmt: skip
    assert err.value.flag in ("OFF_CUTOUT", "BAD_WCS") and key in str(err.value)
    assert requests_seen(srv) == 1  # round 1 only


# ------------------------------------------------------------------------------ caches
def test_layout_cache_on_disk_is_shared_and_corruption_ignored(srv, images, constants, tmp_path):
    client, key = client_for(srv), images["qr3"][0]
    cold = read(client, images, "qr3", constants, LayoutCache(tmp_path))
    files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs]
    assert len(files) == 1 and files[0].endswith(".layout")
    warm = read(client, images, "qr3", constants, LayoutCache(tmp_path))  # another process
    assert warm.requests == 3 and warm.rounds == 1
    assert warm.cutout.flags.tobytes() == cold.cutout.flags.tobytes()
    with open(files[0], "r+b") as fh:
        fh.seek(-100, os.SEEK_END)
        fh.write(b"\0" * 50)
    again = read(client, images, "qr3", constants, LayoutCache(tmp_path))
    assert again.requests == cold.requests and again.rounds == cold.rounds  # cold again
    assert LayoutCache(tmp_path).get(key).etag == cold.etag  # rewritten, readable


def test_constant_cache_on_disk(srv, images, tmp_path):
    client = client_for(srv)
    first = read(client, images, "qr3", ConstantCache(tmp_path / "c"))
    second = read(client, images, "qr3", ConstantCache(tmp_path / "c"))
    assert second.requests < first.requests and second.requests <= 6
    assert second.cutout.psf.tobytes() == first.cutout.psf.tobytes()
    assert first.bytes > 3_000_000 > second.bytes  # the EPSF table was read once


def test_concurrency_cap_is_shared_by_threads(srv, images, constants):
    srv.set_faults({"latency_s": 0.01})
    client = client_for(srv, max_concurrency=2)
    with ThreadPoolExecutor(6) as pool:
        reads = list(pool.map(lambda _: read(client, images, "qr2", constants), range(6)))
    assert srv.stats.as_dict()["max_concurrent"] <= 2
    assert len({r.cutout.image.tobytes() for r in reads}) == 1


@pytest.mark.parametrize("rel", ["qr2", "qr3"])
def test_wrong_predictions_cost_requests_not_pixels(srv, images, rel):
    client, consts = client_for(srv), ConstantCache()
    good = read(client, images, rel, consts)
    (entry,) = consts._mem.values()
    entry.flags_header_len += 2880  # as if the last file of this detector had other headers
    entry.var_header_len -= 2880
    entry.var_from_end += 8160
    w = read(client, images, rel, consts)
    assert w.requests > 6 and w.rounds >= 3  # the re-reads of what round 2 misplaced
    for name in ("image", "flags", "variance", "psf"):
        assert getattr(w.cutout, name).tobytes() == getattr(good.cutout, name).tobytes()
    again = read(client, images, rel, consts)  # the hints were corrected
    assert again.requests == 6
