"""One measurement window read by byte ranges from a whole Level-2 file (spec §9.5).

Cold (layout unknown; per-detector constants known):
  round 1  ``bytes=0-32767``: primary + IMAGE header (grown until END), size, ETag. The
           window box comes from the full-frame IMAGE header (``window.locate``).
  round 2  in parallel: the IMAGE window; the FLAGS header (R7: with its descriptor table);
           QR2: the FLAGS rows at the header length seen last; the VARIANCE header and window,
           placed from the file end by the constants' tail offsets (plus a PSF plane the
           cache lacks).
  round 3  R7: the FLAGS heap run of the window's tiles; any prediction that the headers
           read in round 2 proved wrong is re-read here.
Warm (layout cached): one round of three requests (IMAGE, FLAGS rows or heap run, VARIANCE),
all with ``If-Match`` so a replaced object answers 412: its layout is dropped and the file is
read cold once more (``WindowRead.replaced``). The first file of a (release, detector, token)
also walks the ZODI/PSF|EPSF/WCS-WAVE headers and reads the constants (EPSF: the whole table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from spxflow.format import layout_of_version, psf_plane, release_of_path
from spxflow.photometry.cutout import Cutout, CutoutError, file_layout
from spxflow.photometry.fitsread import FitsReadError, Hdu, Header, data_size
from spxflow.photometry.window import Target, locate, window_cutout
from spxflow.ranges.client import ObjectChanged, RangeClient
from spxflow.ranges.layout import (
    ConstantCache,
    ConstantEntry,
    FileLayout,
    LayoutCache,
    calibration_token,
    padded,
)
from spxflow.ranges.reader import (
    RiceWindow,
    Rounds,
    check_plane,
    cut,
    hdu_at,
    header_len,
    plane_span,
)

FIRST_READ = 32768  # round 1: primary + IMAGE header (+ grow until END)
FLAGS_GUESS = {"qr2": 14400, "r7": 17280}  # FLAGS header guesses before any file was seen
DESC_GUESS = 16320  # R7 descriptor table: 2040 tiles x 8 bytes


@dataclass
class WindowRead:
    """One window read: the Cutout and what it cost."""

    cutout: Cutout
    etag: str
    requests: int  # HTTP requests sent (retries included)
    bytes: int  # payload bytes received
    rounds: int  # sequential request rounds
    replaced: bool  # the cached layout's object had been replaced (412) and was re-read


def _result(r: Rounds, cutout: Cutout, replaced: bool) -> WindowRead:
    return WindowRead(cutout, r.etag or "", r.requests, r.bytes, r.rounds, replaced)


def read_window(
    client: RangeClient,
    key: str,
    ra: float,
    dec: float,
    half_size: int,
    size_arcsec: float,
    *,
    layouts: LayoutCache,
    constants: ConstantCache,
) -> WindowRead:
    """The measurement window of (ra, dec) on Level-2 object ``key`` (see the module
    docstring). CutoutError (READ_FAILED, BAD_WCS, OFF_CUTOUT) for a bad file or a target
    off the frame; the client's ArchiveError subclasses for transport failures."""
    client.url_for(key)  # ForbiddenLocation before anything else
    try:
        release = release_of_path(key)
    except ValueError as exc:
        raise CutoutError("READ_FAILED", f"{key}: {exc}") from None
    r = Rounds(client, key)
    args = (r, release, ra, dec, half_size, size_arcsec, layouts, constants)
    replaced = False
    layout = layouts.get(key)
    try:
        if layout is not None:
            try:
                return _result(r, _warm(layout, *args), replaced)
            except ObjectChanged:
                layouts.drop(key, layout.etag)
                replaced = True
        try:
            return _result(r, _cold(*args), replaced)
        except ObjectChanged:
            if replaced:
                raise
            replaced = True  # replaced between our rounds: once more from round 1
            return _result(r, _cold(*args), replaced)
    except (FitsReadError, ValueError, KeyError) as exc:
        if isinstance(exc, CutoutError):
            raise
        raise CutoutError("READ_FAILED", f"{key}: {type(exc).__name__}: {exc}") from exc


def _plane_span(const: ConstantEntry, k: int, psf_data: int) -> tuple[int, int]:
    """Bytes of QR2 PSF cube plane ``k`` (contiguous: 101 x 101 float32 = 40,804 B)."""
    n = math.prod(const.psf_hdu.shape[1:]) * const.psf_hdu.dtype.itemsize
    return psf_data + k * n, psf_data + (k + 1) * n


def _psf_span(const: ConstantEntry | None, constants, target: Target, psf_data: int):
    """{'psf:<k>': span} of the QR2 cube plane of the target if the cache lacks it (R7:
    the whole EPSF table is cached with the constants)."""
    if const is None or const.psf_name != "PSF":
        return {}
    k = psf_plane(target.x, target.y)
    if constants.plane(const, k) is not None:
        return {}
    return {f"psf:{k}": _plane_span(const, k, psf_data)}


# ----------------------------------------------------------------------------- cold read
def _cold(r: Rounds, release, ra, dec, half_size, size_arcsec, layouts, constants) -> Cutout:
    r.etag, r.size = None, -1
    head = r.header(0, r.round({"head": (0, FIRST_READ)})["head"])
    n0 = header_len(head)
    primary = Header(head[:n0])
    if primary.get("SIMPLE") is not True or data_size(primary):
        raise FitsReadError("not a Level-2 file (no SIMPLE = T, or a primary with data)")
    version = str(primary.get("VERSION", "") or "").strip()
    guess = layout_of_version(version) if version else "qr2"
    rest = r.header(n0, head[n0:])
    image = hdu_at("IMAGE", rest, n0)
    check_plane(image, -32)
    image_raw = rest[: image.data_start - n0]
    ident = (release, int(image.header.get("DETECTOR", 0)), calibration_token(image_raw, version))
    const = constants.get(ident)
    target = locate(image.header, ra, dec, r.key, half_size, size_arcsec)
    box = target.box

    # Round 2: everything whose place is known or predicted.
    flags_at = image.data_start + padded(image.data_size)
    f_len, d_len = FLAGS_GUESS[guess], DESC_GUESS if guess == "r7" else 0
    if const is not None and const.flags_header_len > 0:
        f_len, d_len = const.flags_header_len, const.desc_len
    spans = {
        "image": plane_span(image.data_start, box),
        "flags": (flags_at, flags_at + f_len + d_len),
    }
    var_pred = -1
    if const is not None:
        file_layout({const.psf_name: const.psf_hdu}, version, r.key)
        var_pred = r.size - const.var_from_end
        spans["var"] = plane_span(var_pred, box)
        if const.var_header_len > 0:
            spans["varhdr"] = (var_pred - const.var_header_len, var_pred)
        if not d_len and const.flags_header_len > 0:
            spans["rows"] = plane_span(flags_at + f_len, box)
        spans.update(_psf_span(const, constants, target, r.size - const.psf_from_end))
    got = r.round(spans)

    fraw = r.header(flags_at, got["flags"], guess=f_len or FLAGS_GUESS["qr2"])
    flags = hdu_at("FLAGS", fraw, flags_at)
    flags_raw = fraw[: flags.data_start - flags_at]
    desc = b""
    if flags.is_compressed:
        n = int(flags.header["NAXIS1"]) * int(flags.header["NAXIS2"])
        desc = fraw[len(flags_raw) : len(flags_raw) + n]
        if len(desc) < n:
            more = (flags_at + len(fraw), flags.data_start + n)
            desc += r.round({"desc": more})["desc"]
    else:
        check_plane(flags, 32)
    var_at = flags.data_start + padded(flags.data_size)
    vraw = got.get("varhdr", b"")
    if spans.get("varhdr", (-1,))[0] != var_at or header_len(vraw) != len(vraw):
        vraw = r.header(var_at)  # the prediction missed: the header where FLAGS ends
    variance = hdu_at("VARIANCE", vraw, var_at)
    check_plane(variance, -32)

    # Round 3: the FLAGS heap run (R7), and whatever round 2 placed wrongly.
    later = {}
    if variance.data_start != var_pred:
        later["var"] = plane_span(variance.data_start, box)
    if flags.is_compressed:
        rice = RiceWindow(flags, desc, box)
        later["heap"] = rice.span
    elif spans.get("rows") != plane_span(flags.data_start, box):
        later["rows"] = plane_span(flags.data_start, box)
    got.update(r.round(later))

    if const is None:
        const = _locate_constants(r, ident, version, variance, constants)
    layout = FileLayout(
        key=r.key, etag=r.etag or "", size=r.size, version=version,
        image_raw=image_raw, image_data=image.data_start,
        flags_raw=flags_raw, flags_data=flags.data_start, desc_raw=desc,
        var_raw=vraw[: variance.data_start - var_at], var_data=variance.data_start,
        psf_data=r.size - const.psf_from_end,
    )  # fmt: skip
    fl = rice.decode(got["heap"]) if flags.is_compressed else cut(got["rows"], box, ">i4")
    cutout = _assemble(r, layout, const, constants, target, got, fl, ra, dec, size_arcsec)
    constants.update_hints(
        const,
        flags_header_len=len(flags_raw),
        desc_len=len(desc),
        var_header_len=len(layout.var_raw),
        var_from_end=r.size - variance.data_start,
    )
    layouts.put(layout)
    return cutout


# ----------------------------------------------------------------------------- warm read
def _warm(layout: FileLayout, r: Rounds, release, ra, dec, half_size, size_arcsec, layouts,
          constants) -> Cutout:  # fmt: skip
    r.etag, r.size = layout.etag, layout.size
    flags = layout.flags
    ident = (release, layout.detector, layout.token)
    const = constants.get(ident)
    target = locate(layout.image.header, ra, dec, r.key, half_size, size_arcsec, layout.wcs)
    box = target.box
    spans = {"image": plane_span(layout.image_data, box), "var": plane_span(layout.var_data, box)}
    if flags.is_compressed:
        rice = RiceWindow(flags, layout.desc_raw, box)
        spans["heap"] = rice.span
    else:
        spans["rows"] = plane_span(layout.flags_data, box)
    if const is not None:
        spans.update(_psf_span(const, constants, target, layout.psf_data))
    got = r.round(spans)
    if const is None:
        const = _locate_constants(r, ident, layout.version, layout.variance, constants)
    fl = rice.decode(got["heap"]) if flags.is_compressed else cut(got["rows"], box, ">i4")
    return _assemble(r, layout, const, constants, target, got, fl, ra, dec, size_arcsec)


# ----------------------------------------------------------------------------- constants
def _locate_constants(r: Rounds, ident, version: str, variance: Hdu, constants) -> ConstantEntry:
    """Walk the HDU headers after VARIANCE (ZODI, PSF|EPSF, WCS-WAVE) of the first file of a
    (release, detector, token); read WCS-WAVE and the EPSF table."""
    with constants.lock(ident):
        const = constants.get(ident)
        if const is not None:
            return const
        pos, found, raws = variance.data_start + padded(variance.data_size), {}, {}
        while pos < r.size:
            raw = r.header(pos)
            n = header_len(raw)
            header = Header(raw[:n])
            name = str(header.get("EXTNAME", "")).strip().upper()
            hdu = found[name] = Hdu(name, header, pos + n, data_size(header))
            if hdu.data_start + hdu.data_size > r.size:
                raise FitsReadError(f"{name} HDU at byte {pos} runs past the end of the file")
            raws[name] = (raw[:n], raw[n:])  # header, and the bytes read after it
            pos += n + padded(hdu.data_size)
        psf_name = "PSF" if "PSF" in found else "EPSF"
        file_layout({k: v for k, v in found.items() if k in ("PSF", "EPSF")}, version, r.key)
        psf, wave = found[psf_name], found.get("WCS-WAVE")
        spans = {}
        if psf_name == "EPSF":
            spans["epsf"] = (psf.data_start, psf.data_start + psf.data_size)
        if wave is not None and len(raws["WCS-WAVE"][1]) < wave.data_size:
            spans["wave"] = (wave.data_start, wave.data_start + wave.data_size)
        got = r.round(spans)
        if wave is not None:
            got.setdefault("wave", raws["WCS-WAVE"][1][: wave.data_size])
        const = ConstantEntry(
            release=ident[0], detector=ident[1], token=ident[2], psf_name=psf_name,
            psf_raw=raws[psf_name][0], wave_raw=raws.get("WCS-WAVE", (b"",))[0],
            wave_bytes=got.get("wave", b""), epsf_table=got.get("epsf", b""),
            var_from_end=r.size - variance.data_start, psf_from_end=r.size - psf.data_start,
            flags_header_len=0, desc_len=0, var_header_len=0,
        )  # fmt: skip
        constants.put(const)
        return const


def _assemble(r: Rounds, layout: FileLayout, const: ConstantEntry, constants, target, got,
              flags, ra, dec, size_arcsec) -> Cutout:  # fmt: skip
    box = target.box
    kind = file_layout({const.psf_name: const.psf_hdu}, layout.version, r.key)

    def psf_for(x_parent: float, y_parent: float):
        if kind == "r7":
            row = const.lattice.row_for(x_parent, y_parent)
            return row, const.epsf_row(row)
        k = psf_plane(x_parent, y_parent)
        plane = constants.plane(const, k)
        if plane is None:
            name = f"psf:{k}"
            if name not in got:  # the window's corner moved the target across a zone edge
                got.update(r.round({name: _plane_span(const, k, layout.psf_data)}))
            plane = constants.add_plane(const, k, got[name])
        return k, plane

    return window_cutout(
        r.key, layout.version, kind, layout.image.header, layout.flags.header, target,
        cut(got["image"], box, ">f4"), flags, cut(got["var"], box, ">f4"),
        psf_for, const.wave, ra, dec, size_arcsec,
    )  # fmt: skip
