"""SIA2 discovery rows (spec §3.1 columns, realistic values) of simulated frames, vectorised.

Rows per frame, as the real services list them (spec §8.7, §8.8):

* one row per file: ``obs_collection`` ``spherex_<release>``, ``access_url``
  ``https://irsa.ipac.caltech.edu/ibe/data/spherex/<release>/level2/<period>/<token>/<det>/<file>``
  and ``cloud_access`` key ``<release>/level2/…`` (``access_estsize`` 71638 kB QR2, 65536 kB QR3);
* the ``l2b_retry`` copy of a QR3 exposure is a file of its own: its own row, token, URL and the
  (invented, but unique per file) DID ``ivo://irsa.ipac/spherex_qr3?<obsid>/D<det>/retry``;
* frames whose boresight (the image centre, ``SPS_ELAT``) has ecliptic ``|β| >= 60°`` are listed
  a second time under ``spherex_<release>_deep`` with the SAME URL, DID and file: wide and deep
  can return the same file. Nothing is de-duplicated here; the workflow does that.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from spxflow.format import BANDS, DETECTOR_FOV_DEG, NPIX, PIXEL_SCALE_ARCSEC, SIA_COLUMN_NAMES
from spxflow.sim import survey, timeline
from spxflow.sim import wcs as simwcs

IRSA_DATA_URL = "https://irsa.ipac.caltech.edu/ibe/data/spherex"
ESTSIZE_KB = {"qr2": 71638, "qr3": 65536}
DEEP_MIN_ABS_ELAT_DEG = 60.0
_CORNERS = np.array(
    [[-0.5, -0.5], [NPIX - 0.5, -0.5], [NPIX - 0.5, NPIX - 0.5], [-0.5, NPIX - 0.5]]
)


@functools.lru_cache(maxsize=262144)
def _release_date(slew: int, retry: bool) -> str:
    proc = timeline.slew_meta(slew, retry)[3]
    return timeline.mjd_to_datetime(proc + 37.0).strftime("%Y-%m-%d %H:%M:%S")


def _target_name(slew: int, release: str) -> str:
    target = 10000 + (slew * 7919) % 90000  # = ImageInfo.sps_target
    if release == "qr2":
        return f"SPS_{target}"
    return f"SPS_{target:06d}_S{1 + slew % 60:02d}"  # QR3 style: 'SPS_017838_S34'


def discovery_table(slew, step, det) -> tuple[pd.DataFrame, np.ndarray]:
    """(rows, frame index of each row) for frames (slew, step, det) as ``find_images`` returns
    them: retry copies and deep duplicates are added (see module docstring)."""
    slew = np.asarray(slew, dtype=np.int64)
    n0 = len(slew)
    retry_of = np.flatnonzero(timeline.has_retry(slew)) if n0 else np.zeros(0, dtype=np.int64)
    frame = np.concatenate([np.arange(n0), retry_of]).astype(np.int64)
    retry = np.concatenate([np.zeros(n0, dtype=bool), np.ones(len(retry_of), dtype=bool)])
    slew = slew[frame]
    step = np.asarray(step, dtype=np.int64)[frame]
    dets = np.asarray(det, dtype=np.int64)[frame]
    rel = timeline.release_of_slew(slew).astype(str)
    n = len(slew)
    pair = np.array([survey.DETECTOR_PAIR[int(d)] for d in dets], dtype=np.int64)
    ra0, dec0, pa = survey.pointing(slew, step, pair)
    cd = simwcs.cd_matrix(pa)
    s_ra = np.zeros(n)
    s_dec = np.zeros(n)
    corners = np.zeros((n, 5, 2))
    for d in np.unique(dets):
        sel = dets == d
        sip = simwcs.detector_sip(int(d))
        px = np.append(_CORNERS[:, 0], (NPIX - 1) / 2.0)
        py = np.append(_CORNERS[:, 1], (NPIX - 1) / 2.0)
        r, dd = simwcs.pixel_to_world(
            px[None, :], py[None, :], ra0[sel, None], dec0[sel, None], cd[sel, None], sip
        )
        corners[sel, :4, 0], corners[sel, :4, 1] = r[:, :4], dd[:, :4]
        s_ra[sel], s_dec[sel] = r[:, 4], dd[:, 4]
    corners[:, 4] = corners[:, 0]
    meta = [timeline.slew_meta(int(a), bool(r)) for a, r in zip(slew, retry, strict=True)]
    obsid = [f"{m[1]}_{s}" for m, s in zip(meta, step, strict=True)]
    keys = [
        timeline.level2_key(r, m[0], m[2], o, int(d))
        for r, m, o, d in zip(rel, meta, obsid, dets, strict=True)
    ]
    fmt = "POLYGON ICRS " + " ".join(["%.7f"] * 10)
    regions = [fmt % tuple(c) for c in corners.reshape(n, 10).tolist()]
    t_min = timeline.step_mjd(slew, step)
    bands = np.array([BANDS[d] for d in range(1, 7)])
    df = pd.DataFrame(
        {
            "s_ra": s_ra,
            "s_dec": s_dec,
            "facility_name": "SPHEREx",
            "instrument_name": "SPHEREx",
            "dataproduct_subtype": "science",
            "calib_level": 2,
            "dataproduct_type": "image",
            "energy_bandpassname": [f"SPHEREx-D{d}" for d in dets],
            "energy_emband": "Infrared",
            "obs_id": obsid,
            "s_resolution": 3.075,
            "em_min": bands[dets - 1, 0],
            "em_max": bands[dets - 1, 1],
            "em_res_power": bands[dets - 1, 2],
            "proposal_title": "SPHEREx LVF Survey Data",
            "access_url": [f"{IRSA_DATA_URL}/{k}" for k in keys],
            "access_format": "image/fits",
            "access_estsize": np.array([ESTSIZE_KB[r] for r in rel], dtype=np.int64),
            "t_exptime": timeline.XPOSURE,
            "s_region": regions,
            "obs_collection": [f"spherex_{r}" for r in rel],
            "obs_intent": "science",
            "algorithm_name": "exposure",
            "facility_keywords": "",
            "instrument_keywords": "",
            "environment_photometric": np.nan,
            "proposal_id": "",
            "proposal_pi": "",
            "proposal_project": "SPHEREx",
            "target_name": [_target_name(int(a), r) for a, r in zip(slew, rel, strict=True)],
            "target_type": "field",
            "target_standard": 0,
            "target_moving": 0,
            "target_keywords": "",
            "obs_release_date": [
                _release_date(int(a), bool(r)) for a, r in zip(slew, retry, strict=True)
            ],
            "s_xel1": NPIX,
            "s_xel2": NPIX,
            "s_pixel_scale": PIXEL_SCALE_ARCSEC,
            "position_timedependent": 0,
            "t_min": t_min,
            "t_max": t_min + timeline.SPAN_SECONDS / 86400.0,
            "t_resolution": np.nan,
            "t_xel": np.nan,
            "obs_publisher_did": [
                timeline.publisher_did(r, o, int(d), bool(rt))
                for r, o, d, rt in zip(rel, obsid, dets, retry, strict=True)
            ],
            "s_fov": DETECTOR_FOV_DEG,
            "em_xel": np.nan,
            "pol_states": "",
            "pol_xel": np.nan,
            "cloud_access": [
                '{"aws": {"bucket_name": "nasa-irsa-spherex", '
                f'"key": "{k}", "region": "us-east-1"}}}}'
                for k in keys
            ],
            "o_ucd": "",
            "upload_row_id": 1,
        }
    )
    # Deep duplicates: same file, second collection (appended after the wide rows, so a
    # stable sort keeps wide before deep).
    deep = np.flatnonzero(np.abs(survey.ecliptic_latitude(ra0, dec0)) >= DEEP_MIN_ABS_ELAT_DEG)
    if len(deep):
        dup = df.iloc[deep].copy()
        dup["obs_collection"] = dup["obs_collection"] + "_deep"
        df = pd.concat([df, dup], ignore_index=True)
        frame = np.concatenate([frame, frame[deep]])
    return df.loc[:, list(SIA_COLUMN_NAMES)], frame
