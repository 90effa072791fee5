"""Virtual whole Level-2 files (spxflow.sim.wholefile) and the loopback S3 emulator serving them:
pixels equal the cutouts', astropy reads the files, and the S3 protocol, faults and stats."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import requests
from astropy.io import fits
from astropy.io.fits.hdu.compressed._codecs import Rice1

from spxflow.archive.base import ArchiveError
from spxflow.archive.s3emulator import (
    get_s3_stats,
    replace_object,
    reset_s3_stats,
    running_s3_emulator,
    set_s3_faults,
)
from spxflow.archive.validate import maybe_gunzip
from spxflow.format import NPIX, calibration_key
from spxflow.sim import wholefile
from spxflow.sim.wholefile import RICE_SLOT, RICE_TILE_BYTES, BandCache, WholeFile, s3_key_of

ROW = 4 * NPIX
QR2_POS = (150.25, 45.30)  # demo catalog BrightStar: QR2 only
QR3_POS = (35.50, 48.10)  # demo catalog AGN: QR2 and QR3
CUT_ARCSEC = 250.0  # ~41 px: the window crosses a 32-row band boundary or two
PLANES = ("IMAGE", "FLAGS", "VARIANCE", "ZODI")


@pytest.fixture(scope="module")
def images(sim):
    """release -> (access_url, key, (ra, dec), cutout HDUList, box (x0, x1, y0, y1))."""
    out = {}
    for rel, pos in (("qr2", QR2_POS), ("qr3", QR3_POS)):
        table = sim.discover(*pos, 0.0)
        url = table[table["obs_collection"] == f"spherex_{rel}"].iloc[0]["access_url"]
        cut = fits.open(io.BytesIO(maybe_gunzip(sim.cutout_bytes(url, *pos, CUT_ARCSEC))))
        h = cut["IMAGE"].header
        x0, y0 = round(1020.5 - h["CRPIX1"]), round(1020.5 - h["CRPIX2"])
        ny, nx = cut["IMAGE"].data.shape
        out[rel] = (url, s3_key_of(url), pos, cut, (x0, x0 + nx, y0, y0 + ny))
    return out


@pytest.fixture(scope="module")
def s3(sim):
    with running_s3_emulator(sim) as server:
        yield server


@pytest.fixture()
def url(s3):
    """Base URL with faults cleared and stats zeroed before and after the test."""
    set_s3_faults(s3.base_url, {})
    reset_s3_stats(s3.base_url)
    yield s3.base_url
    set_s3_faults(s3.base_url, {})


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    dt = a.dtype.newbyteorder(">")
    return a.shape == b.shape and a.astype(dt).tobytes() == b.astype(dt).tobytes()


def xml_code(resp) -> str:
    assert resp.headers["Content-Type"] == "application/xml"
    root = ET.fromstring(resp.content)
    assert root.tag == "Error" and root.findtext("RequestId")
    assert resp.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return root.findtext("Code")


def get(url, key, rng=None, **headers):
    if rng:
        headers["Range"] = rng
    return requests.get(f"{url}/{key}", headers=headers, timeout=60)


# ------------------------------------------------------------------ whole files
def test_s3_key_and_whole_file_resolution(sim, images):
    url, key = images["qr2"][:2]
    assert s3_key_of(url + "?center=1,2&size=0.1") == key == sim.image_info(url).key
    with pytest.raises(ValueError):
        s3_key_of("https://example.org/qr2/level2/x.fits")
    wf = sim.whole_file(key)
    assert isinstance(wf, WholeFile) and sim.whole_file(key) is wf  # cached per key
    for bad in (key.replace("_spx_", "_spy_"), key.replace("qr2/", "qr3/"), "qr2/level2/x.fits"):
        with pytest.raises(ArchiveError):
            sim.whole_file(bad)
    cal = calibration_key("qr3", "epsf", 3)
    obj = sim.whole_file(cal)
    assert obj.read(0, obj.size) == sim.calibration_bytes("qr3", "epsf", 3)
    assert list(obj.layout) == ["PRIMARY", "EPSF"]
    with pytest.raises(ArchiveError):
        sim.whole_file(cal.replace("cal-epsf-v2", "cal-epsf-v1"))  # D3 has only v2


def test_constant_length_rice_tiles_decode_bit_exactly():
    rng = np.random.default_rng(7)
    rows = rng.integers(-(2**31), 2**31, (6, NPIX), dtype=np.int64).astype(np.int32)
    rows[1] = 0
    rows[2] = np.where(np.arange(NPIX) % 2, np.int32(-(2**31)), np.int32(2**31 - 1))
    rows[3] = rng.integers(0, 2, NPIX) << 25
    tiles = wholefile.rice_rows(rows)
    assert tiles.shape == (6, RICE_SLOT) and not tiles[:, RICE_TILE_BYTES:].any()
    codec = Rice1(blocksize=32, bytepix=4, tilesize=NPIX)
    for row, tile in zip(rows, tiles, strict=True):
        assert np.array_equal(np.asarray(codec.decode(tile[:RICE_TILE_BYTES]))[:NPIX], row)


@pytest.mark.parametrize("rel", ["qr2", "qr3"])
def test_range_reads_equal_cutout_pixels(s3, sim, images, rel):
    """IMAGE/VARIANCE/ZODI/FLAGS windows read by byte ranges over HTTP, decoded with numpy
    (R7 FLAGS: descriptors + heap run + Rice1), are bit-identical to the cutout's pixels."""
    _, key, _, cut, (x0, x1, y0, y1) = images[rel]
    wf = sim.whole_file(key)
    session = requests.Session()

    def read(a, b):
        r = session.get(f"{s3.base_url}/{key}", headers={"Range": f"bytes={a}-{b - 1}"})
        assert r.status_code == 206 and len(r.content) == b - a
        return r.content

    head = fits.Header.fromstring(read(0, wf.layout["IMAGE"][1]).decode("ascii")[2880:])
    assert head["NAXIS1"] == head["NAXIS2"] == NPIX and head["CRPIX1"] == 1020.5
    assert not any(k.startswith("SIM") for k in head)
    for name in PLANES:
        hdr_at, data_at, _ = wf.layout[name]
        hdr = fits.Header.fromstring(read(hdr_at, data_at).decode("ascii"))
        assert hdr["EXTNAME"] == name
        if name == "FLAGS" and rel == "qr3":
            assert hdr["ZCMPTYPE"] == "RICE_1" and hdr["ZTILE1"] == NPIX and hdr["ZTILE2"] == 1
            assert hdr["TFORM1"] == f"1PB({RICE_SLOT})" and hdr["PCOUNT"] == NPIX * RICE_SLOT
            desc = np.frombuffer(read(data_at, data_at + 8 * NPIX), ">i4").reshape(NPIX, 2)
            lengths, offsets = desc[:, 0], desc[:, 1]
            assert (offsets[1:] != np.cumsum(lengths)[:-1]).all()  # tiles are not packed
            heap = data_at + 8 * NPIX
            a, b = offsets[y0], offsets[y1 - 1] + lengths[y1 - 1]
            run = read(heap + a, heap + b)
            codec = Rice1(blocksize=hdr["ZVAL1"], bytepix=hdr["ZVAL2"], tilesize=NPIX)
            rows = [
                np.asarray(codec.decode(np.frombuffer(run, np.uint8, n, o - a)))[:NPIX]
                for n, o in zip(lengths[y0:y1], offsets[y0:y1], strict=True)
            ]
            got = np.array(rows)[:, x0:x1]
        else:
            dtype = ">i4" if name == "FLAGS" else ">f4"
            raw = read(data_at + y0 * ROW, data_at + y1 * ROW)
            got = np.frombuffer(raw, dtype).reshape(y1 - y0, NPIX)[:, x0:x1]
        assert same_bits(got, cut[name].data), name


@pytest.mark.parametrize("rel", ["qr2", "qr3"])
def test_materialised_whole_file_opens_in_astropy(sim, images, rel):
    _, key, _, cut, (x0, x1, y0, y1) = images[rel]
    wf = sim.whole_file(key)
    data = wf.materialise()  # the one full-frame render per release in this module
    assert len(data) == wf.size and wf.size % 2880 == 0
    rng = np.random.default_rng(3)
    for a in rng.integers(0, wf.size - 1, 20):  # ranges across segment/band edges agree
        b = min(wf.size, int(a) + int(rng.integers(1, 300_000)))
        assert wf.read(int(a), b) == data[a:b]
    names = ["PRIMARY", "IMAGE", "FLAGS", "VARIANCE", "ZODI"]
    names += ["EPSF", "WCS-WAVE"] if rel == "qr3" else ["PSF", "WCS-WAVE"]
    with fits.open(io.BytesIO(data), lazy_load_hdus=False) as hdul:
        hdul.verify("exception")
        assert [h.name for h in hdul] == names == list(wf.layout)
        for i, name in enumerate(names):
            info = hdul.fileinfo(i)
            assert (info["hdrLoc"], info["datLoc"]) == wf.layout[name][:2], name
        assert isinstance(hdul["FLAGS"], fits.CompImageHDU if rel == "qr3" else fits.ImageHDU)
        for name in PLANES:
            assert same_bits(hdul[name].section[y0:y1, x0:x1], cut[name].data), name
        whole = hdul["IMAGE"].header
        part = cut["IMAGE"].header
        for k in part:
            if not k.startswith(("SIM", "CRPIX", "NAXIS", "COMMENT", "HISTORY")):
                assert whole[k] == part[k], k
        assert whole["CRPIX1"] == part["CRPIX1"] + x0 and whole["CRPIX2A"] == 1.0
        if rel == "qr3":
            flags = hdul["FLAGS"].data  # every tile of the heap decodes
            assert flags.shape == (NPIX, NPIX) and same_bits(flags[y0:y1, x0:x1], cut["FLAGS"].data)
        assert hdul[5].data.tobytes() == cut[5].data.tobytes()  # PSF cube / EPSF table


def test_concurrent_planes_of_one_window_render_once(sim, images):
    url = images["qr2"][0]
    cache = BandCache(64 * 2**20)
    wf = WholeFile(sim.image_info(url), sim.cfg, cache=cache)
    y0 = 705  # rows 705..734: inside band 22 (rows 704..735)
    out = {}

    def read(name):
        at = wf.layout[name][1]
        out[name] = wf.read(at + y0 * ROW, at + (y0 + 30) * ROW)

    threads = [threading.Thread(target=read, args=(n,)) for n in ("IMAGE", "FLAGS", "VARIANCE")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.stats()["renders"] == 1 and cache.stats()["bands"] == 1
    ref = sim.whole_file(images["qr2"][1])  # another WholeFile of the same image agrees
    at = ref.layout["VARIANCE"][1]
    assert ref.read(at + y0 * ROW, at + (y0 + 30) * ROW) == out["VARIANCE"]


# ------------------------------------------------------------------ protocol
def test_ranges_head_and_whole_object(url, sim, images):
    key = images["qr2"][1]
    wf = sim.whole_file(key)
    r = get(url, key, "bytes=0-32767")
    assert r.status_code == 206 and r.content == wf.read(0, 32768)
    assert r.headers["Content-Range"] == f"bytes 0-32767/{wf.size}"
    assert r.headers["Content-Length"] == "32768" and r.headers["Accept-Ranges"] == "bytes"
    etag = r.headers["ETag"]
    assert etag.startswith('"') and len(etag) == 34 and r.headers["Last-Modified"].endswith("GMT")
    r = get(url, key, f"bytes={wf.size - 10}-")
    assert r.status_code == 206 and r.content == wf.read(wf.size - 10, wf.size)
    r = get(url, key, "bytes=-100")
    assert r.headers["Content-Range"] == f"bytes {wf.size - 100}-{wf.size - 1}/{wf.size}"
    assert r.content == wf.read(wf.size - 100, wf.size)
    r = get(url, key, f"bytes=10-{wf.size + 5}")  # end clamped to the object
    assert r.status_code == 206 and len(r.content) == wf.size - 10
    h = requests.head(f"{url}/{key}", timeout=10)
    assert h.status_code == 200 and h.headers["Content-Length"] == str(wf.size) and not h.content
    assert h.headers["ETag"] == etag
    h = requests.head(f"{url}/{key}", headers={"Range": "bytes=5-9"}, timeout=10)
    assert h.status_code == 206 and h.headers["Content-Length"] == "5"
    cal = calibration_key("qr3", "epsf", 3)
    whole = get(url, cal)  # no Range: 200 and the whole object
    assert whole.status_code == 200 and whole.content == sim.calibration_bytes("qr3", "epsf", 3)
    assert "Content-Range" not in whole.headers
    r = get(url, cal, "bytes=9-2")  # not a valid range: ignored, as S3 does
    assert r.status_code == 200 and len(r.content) == len(whole.content)


def test_refusals_are_s3_xml_errors(url, images):
    key = images["qr2"][1]
    size = int(requests.head(f"{url}/{key}", timeout=10).headers["Content-Length"])
    r = get(url, key, "bytes=0-1,5-9")
    assert r.status_code == 400 and xml_code(r) == "InvalidArgument"
    r = get(url, key, f"bytes={size}-")
    assert r.status_code == 416 and xml_code(r) == "InvalidRange"
    assert r.headers["Content-Range"] == f"bytes */{size}"
    assert get(url, key, "bytes=-0").status_code == 416
    r = get(url, key.replace("_spx_", "_spy_"))
    assert r.status_code == 404 and xml_code(r) == "NoSuchKey"
    assert ET.fromstring(r.content).findtext("Key") == key.replace("_spx_", "_spy_")
    r = get(url, "qr2/epsf/nothing/1/x.fits")
    assert r.status_code == 404 and xml_code(r) == "NoSuchKey"
    r = get(url, "spherex/qr2/level2/x.fits")
    assert r.status_code == 403 and xml_code(r) == "AccessDenied"
    assert requests.head(f"{url}/{key}x", timeout=10).status_code == 404


def test_if_match_after_replace(url, images):
    key = images["qr2"][1]
    first = get(url, key, "bytes=0-99")
    etag = first.headers["ETag"]
    assert get(url, key, "bytes=0-99", **{"If-Match": etag}).status_code == 206
    assert replace_object(url, key)["generation"] >= 1
    r = get(url, key, "bytes=0-99", **{"If-Match": etag})
    assert r.status_code == 412 and xml_code(r) == "PreconditionFailed"
    new = get(url, key, "bytes=0-99")
    assert new.headers["ETag"] != etag and new.content == first.content  # same bytes
    assert new.headers["Last-Modified"] != first.headers["Last-Modified"]
    ok = get(url, key, "bytes=0-99", **{"If-Match": new.headers["ETag"]})
    assert ok.status_code == 206
    assert get(url, key, "bytes=0-99", **{"If-Match": "*"}).status_code == 206


def test_faults_fire_and_are_counted(url, images):
    key = images["qr2"][1]
    other = calibration_key("qr3", "epsf", 3)
    m = key.rsplit("/", 1)[1]

    def only(rule):
        set_s3_faults(url, {"seed": 5, "rules": [{"match": m, **rule}]})

    only({"fault": "503", "retry_after": 2, "max_per_url": 2})
    codes = [get(url, key, "bytes=0-9") for _ in range(3)]
    assert [r.status_code for r in codes] == [503, 503, 206]
    assert xml_code(codes[0]) == "SlowDown" and codes[0].headers["Retry-After"] == "2"
    assert get(url, other, "bytes=0-9").status_code == 206  # the rule matches one key only
    only({"fault": "500"})
    r = get(url, key, "bytes=0-9")
    assert r.status_code == 500 and xml_code(r) == "InternalError"
    only({"fault": "reset", "max_per_url": 1})
    with pytest.raises(requests.exceptions.ConnectionError):
        get(url, key, "bytes=0-9")
    assert get(url, key, "bytes=0-9").status_code == 206
    only({"fault": "truncate", "max_per_url": 1})
    with pytest.raises(requests.exceptions.RequestException):
        get(url, key, "bytes=0-99999")
    assert len(get(url, key, "bytes=0-99999").content) == 100_000
    for code, s3code in (("403", "AccessDenied"), ("404", "NoSuchKey")):
        only({"fault": code})
        for rng in ("bytes=0-9", "bytes=10-19"):  # permanent: every request of the key
            r = get(url, key, rng)
            assert r.status_code == int(code) and xml_code(r) == s3code
    only({"fault": "slow", "slow_s": 0.3})
    t = time.monotonic()
    assert get(url, key, "bytes=0-9").status_code == 206 and time.monotonic() - t >= 0.3
    set_s3_faults(url, {"latency_s": 0.2})
    t = time.monotonic()
    assert get(url, other, "bytes=0-9").status_code == 206 and time.monotonic() - t >= 0.2
    only({"fault": "replace", "after": 2})
    tags = [get(url, key, "bytes=0-9").headers["ETag"] for _ in range(4)]
    assert tags[0] == tags[1] != tags[2] == tags[3]  # replaced once, after 2 requests

    stats = get_s3_stats(url)
    assert stats["faults"] == {
        "503": 2,
        "500": 1,
        "reset": 1,
        "truncate": 1,
        "403": 2,
        "404": 2,
        "slow": 1,
        "replace": 1,
    }
    per = stats["per_key"][key]
    assert per["requests"] == per["GET"] == 17 and per["HEAD"] == 0
    assert stats["per_key"][other] == {"requests": 2, "bytes": 20, "GET": 2, "HEAD": 0}
    assert stats["requests"] == 19 and stats["status"]["reset"] == 1
    assert stats["status"]["truncate"] == 1 and stats["status"]["206"] == 10
    xml = 7 * 200  # 7 XML error bodies of a few hundred bytes each
    assert 70 + 150_000 + xml < per["bytes"] < 70 + 150_000 + 7 * 400
    assert stats["bytes_sent"] == per["bytes"] + 20
    assert stats["max_concurrent"] >= 1 and stats["in_flight"] == 0
    reset_s3_stats(url)
    assert get_s3_stats(url)["requests"] == 0 and get_s3_stats(url)["per_key"] == {}


def test_fault_decisions_are_reproducible(url, images):
    key = images["qr2"][1]
    faults = {"seed": 11, "rules": [{"fault": "503", "rate": 0.5}]}

    def run():
        set_s3_faults(url, faults)
        reset_s3_stats(url)
        return [get(url, key, f"bytes={i % 3}-99").status_code for i in range(24)]

    first = run()
    assert first == run() and {503, 206} == set(first)
    assert get_s3_stats(url)["faults"]["503"] == first.count(503)
    r = requests.post(f"{url}/__faults", json={"rules": [{"fault": "teapot"}]}, timeout=10)
    assert r.status_code == 400
    assert requests.get(f"{url}/__faults", timeout=10).json()["rules"][0]["rate"] == 0.5


def test_bytes_and_requests_per_key_with_concurrency(url, sim, images):
    keys = [images["qr2"][1], images["qr3"][1]]
    session_local = threading.local()

    def fetch(i):
        s = getattr(session_local, "s", None) or requests.Session()
        session_local.s = s
        k = keys[i % 2]
        r = s.get(f"{url}/{k}", headers={"Range": f"bytes={i * 1000}-{i * 1000 + 4999}"})
        assert r.status_code == 206 and len(r.content) == 5000
        return len(r.content)

    threads = [
        threading.Thread(target=lambda j=j: [fetch(j * 10 + i) for i in range(10)])
        for j in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    requests.head(f"{url}/{keys[0]}", timeout=10)
    stats = get_s3_stats(url)
    assert stats["requests"] == 81 and stats["bytes_sent"] == 80 * 5000
    assert stats["per_key"][keys[0]] == {"requests": 41, "bytes": 200_000, "GET": 40, "HEAD": 1}
    assert stats["per_key"][keys[1]]["bytes"] == 200_000
    assert 1 <= stats["max_concurrent"] <= 8 and stats["status"] == {"206": 80, "200": 1}


def test_cli(tmp_path, images):
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"seed": 2, "rules": [{"fault": "500", "match": "D3_spx"}]}))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spxflow.archive.s3emulator",
            "--port",
            "0",
            "--faults",
            str(faults),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        base = line.split()[-1]
        assert base.startswith("http://127.0.0.1:")
        assert requests.get(f"{base}/__faults", timeout=10).json()["rules"][0]["fault"] == "500"
        r = get(base, images["qr2"][1], "bytes=0-9")  # a D3 image
        assert r.status_code == 500 and xml_code(r) == "InternalError"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
