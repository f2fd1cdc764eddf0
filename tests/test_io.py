"""Tests for helpers/io.py: images, DICOM, TFRecord.

Image kinds and bad image files are tested in test_reliability_images.py; bad
DICOM files at the end of this file.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image, JpegImagePlugin
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLSLossless
from support import smooth_rgb

from helpers import data as D
from helpers import io as hio
from tools.writers import write_dicom, write_raw_tfrecord, write_tfrecords

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL = REPO_ROOT.parent / "shared" / "datasets" / "isic-archive-uda1"

META = {
    "image_name": "ISIC_0001234",
    "patient_id": "IP_0004567",
    "sex": "male",
    "age_approx": 45.0,
    "anatom_site_general_challenge": "upper extremity",
}


# --------------------------------------------------------------------------- DICOM
def test_dicom_round_trip_colours_and_tags(tmp_path):
    rgb = smooth_rgb()
    path = tmp_path / "ISIC_0001234.dcm"
    write_dicom(path, rgb, META)

    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    assert (ds.SamplesPerPixel, ds.BitsAllocated, ds.PlanarConfiguration) == (3, 8, 0)
    assert (ds.Rows, ds.Columns) == (64, 96)
    assert (ds.PatientSex, ds.PatientAge, ds.BodyPartExamined) == ("M", "045Y", "UPPER EXTREMITY")
    assert ds.ImageComments == "ISIC_0001234"
    # the encapsulated JPEG really is 4:2:2 YCbCr, so the YBR_FULL_422 label is truthful
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    with Image.open(io.BytesIO(frame)) as jpg:
        assert JpegImagePlugin.get_sampling(jpg) == 1  # Pillow's code for 4:2:2

    arr, meta = hio.read_dicom(path)
    assert arr.dtype == np.uint8 and arr.shape == rgb.shape
    err = np.abs(arr.astype(int) - rgb.astype(int))
    assert err.mean() < 3, err.mean()
    # channel order right: the red ramp runs left to right, the green one top to bottom
    assert arr[32, -1, 0] > arr[32, 0, 0] + 100 and arr[0, 48, 1] > arr[-1, 48, 1] + 100
    assert meta == {
        "image_name": "ISIC_0001234",
        "patient_id": "IP_0004567",
        "sex": "male",
        "age_approx": 45.0,
        "anatom_site": "upper extremity",
    }


def test_dicom_is_reproducible_and_handles_missing_tags(tmp_path):
    rgb = smooth_rgb(32, 32)
    meta = {"image_name": "ISIC_0000009", "patient_id": "IP_0000001", "sex": float("nan"),
            "age_approx": None, "anatom_site_general_challenge": ""}
    write_dicom(tmp_path / "a.dcm", rgb, meta)
    write_dicom(tmp_path / "b.dcm", rgb, meta)
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()
    _, got = hio.read_dicom(tmp_path / "a.dcm")
    assert got["sex"] is None and got["age_approx"] is None and got["anatom_site"] is None
    write_dicom(tmp_path / "c.dcm", rgb, {**META, "sex": "female", "age_approx": 5,
                                          "StudyDescription": "synthetic"})
    _, got = hio.read_dicom(tmp_path / "c.dcm")
    assert got["sex"] == "female" and got["age_approx"] == 5.0
    assert pydicom.dcmread(tmp_path / "c.dcm").StudyDescription == "synthetic"  # DICOM keywords pass through
    with pytest.raises(ValueError, match="d.dcm.*RGB uint8"):
        write_dicom(tmp_path / "d.dcm", rgb.astype(np.float32), META)


@pytest.mark.parametrize(("text", "years"), [("045Y", 45.0), ("085Y", 85.0), ("006M", 0.5), ("45", 45.0),
                                              ("", None), ("junk", None)])
def test_dicom_age_strings(text, years):
    assert hio.age_from_dicom(text) == years


def test_dicom_site_with_slash_round_trips_without_warning(tmp_path, recwarn):
    write_dicom(tmp_path / "hn.dcm", smooth_rgb(8, 8), {**META, "anatom_site_general_challenge": "head/neck"})
    assert pydicom.dcmread(tmp_path / "hn.dcm").BodyPartExamined == "HEAD/NECK"
    assert hio.read_dicom(tmp_path / "hn.dcm")[1]["anatom_site"] == "head/neck"
    assert not [w for w in recwarn if "Invalid value for VR" in str(w.message)]


def test_dicom_summary(tmp_path):
    write_dicom(tmp_path / "train" / "ISIC_0000001.dcm", smooth_rgb(40, 50), META)
    write_dicom(tmp_path / "train" / "ISIC_0000002.dcm", smooth_rgb(30, 20),
                {**META, "image_name": "ISIC_0000002", "sex": "female"})
    (tmp_path / "train" / "notes.txt").write_text("not a dicom")
    frame = hio.dicom_summary(tmp_path, progress=False)
    assert list(frame["file"]) == ["train/ISIC_0000001.dcm", "train/ISIC_0000002.dcm"]
    assert list(frame["rows"]) == [40, 30] and list(frame["columns"]) == [50, 20]
    assert list(frame["sex"]) == ["male", "female"]
    assert set(frame["photometric"]) == {"YBR_FULL_422"}
    assert set(frame["transfer_syntax"]) == {"1.2.840.10008.1.2.4.50"}


def test_read_image_reads_dicom(tmp_path):
    path = tmp_path / "x.dcm"
    rgb = smooth_rgb(24, 40)
    write_dicom(path, rgb, META)
    assert np.abs(hio.read_image(path).astype(int) - rgb).mean() < 3


# --------------------------------------------------------------------------- TFRecord
def test_tfrecord_round_trip(tmp_path):
    images = [smooth_rgb(32, 48) // (i + 1) for i in range(5)]
    records = [
        {"image": images[0], "image_name": "ISIC_0000000", "patient_id": "IP_0000042", "sex": "male",
         "age_approx": 45.0, "anatom_site_general_challenge": "torso", "diagnosis": "melanoma", "target": 1},
        {"image": images[1], "image_name": "ISIC_0000001", "patient_id": 7, "sex": 0,
         "age_approx": 30, "anatom_site_general_challenge": 0, "diagnosis": 5, "target": 0},
        {"image": images[2], "image_name": "ISIC_0000002", "patient_id": "IP_0000042", "sex": None,
         "age_approx": float("nan"), "anatom_site_general_challenge": None, "diagnosis": "unknown", "target": 0},
        # test-style records: no diagnosis / target
        {"image": images[3], "image_name": "ISIC_0000003", "patient_id": "IP_0000001", "sex": "female",
         "age_approx": 70.0, "anatom_site_general_challenge": "palms/soles"},
        {"image": images[4], "image_name": "ISIC_0000004", "patient_id": "IP_0000001", "sex": "female",
         "age_approx": 70.0, "anatom_site_general_challenge": "oral/genital"},
    ]
    paths = write_tfrecords(records, tmp_path / "tfrecords", "train", per_file=2)
    assert [p.name for p in paths] == ["train00-2.tfrec", "train01-2.tfrec", "train02-1.tfrec"]

    got = list(hio.read_tfrecords(tmp_path / "tfrecords"))
    assert [r["image_name"] for r in got] == [f"ISIC_{i:07d}" for i in range(5)]
    assert got[0]["sex"] == 1 and got[0]["anatom_site_general_challenge"] == 3
    assert got[0]["diagnosis"] == 4 and got[0]["target"] == 1 and got[0]["patient_id"] == 42
    assert got[0]["age_approx"] == 45 and isinstance(got[0]["age_approx"], int)
    assert got[2]["sex"] == -1 and got[2]["age_approx"] == -1 and got[2]["diagnosis"] == 8
    assert got[3]["diagnosis"] == -1 and got[3]["target"] == -1
    for rec, img in zip(got, images):
        assert rec["image"].shape == img.shape and rec["image"].dtype == np.uint8
        assert np.abs(rec["image"].astype(int) - img).mean() < 3

    raw = next(hio.read_tfrecords(paths[:1], decode_images=False))
    assert raw["image"][:2] == b"\xff\xd8"  # JPEG SOI marker

    frame = hio.tfrecord_frame(tmp_path / "tfrecords")
    assert list(frame.columns) == ["file", "image_name", "patient_id", "sex", "age_approx",
                                   "anatom_site_general_challenge", "diagnosis", "target"]
    assert frame.loc[0, ["patient_id", "sex", "anatom_site_general_challenge", "diagnosis"]].tolist() == [
        "IP_0000042", "male", "torso", "melanoma"]
    assert frame.loc[1, ["patient_id", "sex", "anatom_site_general_challenge", "diagnosis"]].tolist() == [
        "IP_0000007", "female", "head/neck", "nevus"]
    assert pd.isna(frame.loc[2, "sex"]) and np.isnan(frame.loc[2, "age_approx"])
    assert frame["target"].dtype == "Int64" and frame["target"].isna().tolist() == [False] * 3 + [True] * 2
    assert frame.loc[4, "file"] == "train02-1.tfrec"


def test_tfrecord_codes_follow_layout_contract():
    assert hio.TFREC_SEX.index("male") == 1 and hio.TFREC_SITES.index("oral/genital") == 5
    codes = hio.tfrec_codes()
    assert codes["sex"].index("female") == 0 and codes["sex"].index("male") == 1
    assert codes["anatom_site_general_challenge"][3] == "torso"
    assert codes["diagnosis"][4] == "melanoma" and codes["diagnosis"][-1] == "unknown"


def test_tfrecord_errors(tmp_path):
    with pytest.raises(ValueError, match="diagnosis 'melanomaa'"):
        write_tfrecords([{"image": b"\xff\xd8", "image_name": "x", "diagnosis": "melanomaa"}],
                        tmp_path, "bad", 1)
    broken = tmp_path / "broken00-3.tfrec"
    good = write_tfrecords([{"image": smooth_rgb(8, 8), "image_name": "ISIC_0000001"}], tmp_path, "ok", 1)[0]
    broken.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(ValueError, match="broken00-3.tfrec"):
        list(hio.read_tfrecords([broken]))


# --------------------------------------------------------------------------- read_image
def test_read_image_draft_mode_shrinks_large_jpeg(tmp_path):
    Image.fromarray(smooth_rgb(600, 800)).save(tmp_path / "a.jpg", quality=95)
    assert hio.read_image(tmp_path / "a.jpg").shape == (600, 800, 3)
    small = hio.read_image(tmp_path / "a.jpg", draft=128)
    assert small.shape == (150, 200, 3)  # 1/4 scale: both sides still >= 128


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/datasets/isic-archive-uda1 absent")
def test_read_image_real_isic_jpeg():
    path = sorted(REAL.glob("ISIC_*.jpg"))[0]
    arr = hio.read_image(path)
    with Image.open(path) as im:
        assert arr.shape == (im.size[1], im.size[0], 3)
    assert 40 < arr.mean() < 250  # a real skin photo, not black or blank


# --------------------------------------------------------------------------- HDF5 image stores
def _store(path: Path, members: dict) -> Path:
    import h5py

    with h5py.File(path, "w") as store:
        for key, value in members.items():
            store.create_dataset(key, data=value)
    return path


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def test_read_hdf5_image_decodes_like_read_image(tmp_path):
    rgb = smooth_rgb(40, 60)
    data = _jpeg(rgb)
    (tmp_path / "a.jpg").write_bytes(data)
    store = _store(tmp_path / "train-image.hdf5", {
        "ISIC_0000001": np.void(data), "ISIC_0000002": np.frombuffer(data, np.uint8)})
    for key in ("ISIC_0000001", "ISIC_0000002"):
        assert np.array_equal(hio.read_hdf5_image(store, key), hio.read_image(tmp_path / "a.jpg"))
    assert np.array_equal(hio.read_image(store / "ISIC_0000001"), hio.read_image(tmp_path / "a.jpg"))
    assert hio.read_image(store / "ISIC_0000001", draft=8).shape[0] < 40  # draft mode as for files


@pytest.mark.parametrize(("member", "words"), [
    (None, r"no image 'ISIC_0000009' in this HDF5 file"),
    (np.void(b"\xff\xd8\xff\xe0 not really a jpeg"), r"\[ISIC_0000009\]: (corrupt|not an image)"),
    (np.arange(6.0), r"member 'ISIC_0000009' holds ndarray, not encoded image bytes"),
])
def test_read_hdf5_image_bad_or_missing_key_names_file_and_key(tmp_path, member, words):
    store = _store(tmp_path / "s.hdf5", {"ISIC_0000001": np.void(_jpeg(smooth_rgb(8, 8))),
                                         **({"ISIC_0000009": member} if member is not None else {})})
    with pytest.raises(ValueError, match=rf"s\.hdf5.*{words}"):
        hio.read_hdf5_image(store, "ISIC_0000009")
    with pytest.raises(ValueError, match=rf"s\.hdf5.*{words}"):
        hio.read_image(store / "ISIC_0000009")


def test_read_hdf5_image_refuses_a_file_that_is_not_hdf5(tmp_path):
    (tmp_path / "x.hdf5").write_bytes(b"\x89HDF not really")
    with pytest.raises(ValueError, match=r"x\.hdf5: not a readable HDF5 file"):
        hio.read_hdf5_image(tmp_path / "x.hdf5", "ISIC_0000001")


# --------------------------------------------------------------------------- TFRecords of other writers
def _shard(path: Path, records: list[dict]) -> Path:
    """A TFRecord shard written feature by feature: {key: (value, 'byte'|'int'|'float')}."""
    from tfrecord import TFRecordWriter

    writer = TFRecordWriter(str(path))
    for rec in records:
        writer.write(rec)
    writer.close()
    return path


def test_tfrecords_with_the_image_under_image_encoded(tmp_path):
    """The object-detection convention: image/encoded, image/filename, image/object/..."""
    rgb = smooth_rgb(24, 32)
    shard = _shard(tmp_path / "od.tfrec", [{
        "image/encoded": (_jpeg(rgb), "byte"), "image/filename": (b"ISIC_0000001.jpg", "byte"),
        "image/format": (b"jpeg", "byte"), "image/object/class/label": ([1, 2], "int")}])
    (rec,) = list(hio.read_tfrecords(shard))
    assert rec["image/encoded"].shape == (24, 32, 3) and np.abs(rec["image/encoded"].astype(int) - rgb).mean() < 3
    assert rec["image/filename"] == "ISIC_0000001.jpg" and rec["image/object/class/label"].tolist() == [1, 2]
    (raw,) = list(hio.read_tfrecords(shard, decode_images=False))
    assert raw["image/encoded"] == _jpeg(rgb)


def test_an_unreadable_record_names_the_shard_and_its_index(tmp_path):
    good = {"image": (_jpeg(smooth_rgb(8, 8)), "byte"), "image_name": (b"ISIC_0000001", "byte")}
    cases = {
        "binary.tfrec": [good, {**good, "mask": (b"\x89PNG\xff\xfe", "byte")}],
        "bad_image.tfrec": [good, {**good, "image": (b"\xff\xd8\xff\xe0 not a jpeg", "byte")}],
    }
    for name, records in cases.items():
        with pytest.raises(ValueError, match=rf"{name} \(record 1\): "):
            list(hio.read_tfrecords(_shard(tmp_path / name, records)))
    whole = _shard(tmp_path / "whole.tfrec", [good, good, good]).read_bytes()
    (tmp_path / "cut.tfrec").write_bytes(whole[: len(whole) * 5 // 6])  # inside the third record
    with pytest.raises(ValueError, match=r"cut\.tfrec \(record 2\): corrupt TFRecord"):
        list(hio.read_tfrecords(tmp_path / "cut.tfrec"))


# ==========================================================================================
# Reliability: DICOM files that cannot be read give a clear error naming the file.
#
# No pixel data, a transfer syntax no installed decoder supports, a truncated
# file, or bytes that are not DICOM at all: ``read_dicom``, ``read_image``,
# ``read_image_tensor`` (the training road) and, for unreadable headers,
# ``dicom_summary`` raise a ``ValueError`` naming the file and the problem; in a
# training epoch such a file is skipped like any other unreadable image.
# ==========================================================================================
def _valid(path):
    write_dicom(path, smooth_rgb(16, 16), META)
    return path


def _not_dicom(path):
    path.write_bytes(b"this is not DICOM at all" * 10)


def _empty(path):
    path.write_bytes(b"")


def _jpeg_named_dcm(path):
    buf = io.BytesIO()
    Image.fromarray(smooth_rgb(16, 16)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue())


def _no_pixel_data(path):
    ds = pydicom.dcmread(_valid(path))
    del ds.PixelData
    ds.save_as(path)


def _made_up_transfer_syntax(path):
    ds = pydicom.dcmread(_valid(path))
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.9999.1"  # no such syntax
    ds.save_as(path)


def _jpeg_ls(path):
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    ds = pydicom.dcmread(_valid(path))
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless  # real, but no decoder installed
    ds.save_as(path)


def _truncated(path):
    data = _valid(path).read_bytes()
    path.write_bytes(data[: len(data) - 200])   # cut inside the encapsulated pixel data


#: case -> (writer, words of the error, header-level: dicom_summary refuses it too)
CASES = {
    "bytes that are not DICOM": (_not_dicom, "not a DICOM file", True),
    "empty file": (_empty, "not a DICOM file", True),
    "a JPEG named .dcm": (_jpeg_named_dcm, "not a DICOM file", True),
    "no pixel data": (_no_pixel_data, "DICOM file has no pixel data", False),
    "made-up transfer syntax": (_made_up_transfer_syntax, "unsupported transfer syntax", False),
    "JPEG-LS without a decoder": (_jpeg_ls, "unsupported transfer syntax 1.2.840.10008.1.2.4.80", False),
    "truncated pixel data": (_truncated, "truncated DICOM file", False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_dicom_names_the_file(tmp_path, case):
    write, words, header_level = CASES[case]
    path = tmp_path / "ISIC_0001234.dcm"
    write(path)
    for read in (hio.read_dicom, hio.read_image, D.read_image_tensor):
        with pytest.raises(ValueError, match=rf"ISIC_0001234\.dcm: .*{words}"):
            read(path)
    if header_level:
        with pytest.raises(ValueError, match=rf"ISIC_0001234\.dcm: {words}"):
            hio.dicom_summary(tmp_path, progress=False)
    else:
        assert hio.dicom_summary(tmp_path, progress=False)["image_name"].tolist() == ["ISIC_0001234"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_dicom_is_skipped_in_an_epoch(tmp_path, case):
    write, words, _ = CASES[case]
    good = _valid(tmp_path / "good.dcm")
    bad = tmp_path / "bad.dcm"
    write(bad)
    frame = pd.DataFrame({"path": [str(good), str(bad), str(good)], "target": [0, 1, 0]})
    dataset = D.LesionDataset(frame, D.eval_transforms(16))
    with pytest.warns(D.SkippedImageWarning, match=rf"bad\.dcm: .*{words}"):
        items = [dataset[i] for i in range(3)]
    assert [item is None for item in items] == [False, True, False]
    ((path, reason),) = dataset.skipped
    assert path == str(bad) and "bad.dcm" in reason and words in reason


def test_a_valid_dicom_still_reads(tmp_path):
    path = _valid(tmp_path / "ok.dcm")
    assert hio.read_image(path).shape == (16, 16, 3)
    assert tuple(D.read_image_tensor(path).shape) == (3, 16, 16)


# --------------------------------------------------------------------------- files of other writers
def _testdata(name: str):
    """A DICOM file shipped with pydicom (or the pydicom-data package); skip where absent."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} absent (pip install pydicom-data)")
    return path


def _copy(src, dst, **changes):
    ds = pydicom.dcmread(src)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(dst)
    return dst


def test_free_text_image_comments_are_not_an_image_name(tmp_path):
    path = _copy(_valid(tmp_path / "a.dcm"), tmp_path / "ISIC_0009999.dcm",
                 ImageComments="Lesion on the left forearm, seen again in 6 months")
    assert hio.read_dicom(path)[1]["image_name"] == "ISIC_0009999"     # the file stem
    mr = _testdata("MR_small.dcm")                                      # ImageComments 'Uncompressed'
    assert hio.read_dicom(mr)[1]["image_name"] == "MR_small"
    folder = tmp_path / "f"
    folder.mkdir()
    _copy(mr, folder / "mr.dcm")
    assert hio.dicom_summary(folder, progress=False)["image_name"].tolist() == ["mr"]
    _copy(_valid(tmp_path / "b.dcm"), tmp_path / "b2.dcm", ImageComments="ISIC_0000042")
    assert hio.read_dicom(tmp_path / "b2.dcm")[1]["image_name"] == "ISIC_0000042"


def _dicom_window(x, center, width):
    """DICOM PS3.3 C.11.2.1.2.1 linear window, mapped to 0..255."""
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0, 1) * 255


def test_signed_16_bit_images_use_their_window_not_the_full_range(tmp_path):
    path = _testdata("MR_small.dcm")                   # signed 16-bit, window 600 / 1600
    ds = pydicom.dcmread(path)
    arr = hio.read_dicom(path)[0]
    assert arr.shape == (64, 64, 3) and (arr[..., 0] == arr[..., 2]).all()
    expected = _dicom_window(ds.pixel_array.astype(float), 600, 1600)
    assert np.abs(arr[..., 0] - expected).max() <= 1
    assert arr.mean() > 40                              # was about 1: nearly black


def test_signed_images_without_a_window_span_their_range(tmp_path):
    path = _testdata("CT_small.dcm")                   # signed, rescale intercept, no window
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    arr = hio.read_dicom(path)[0][..., 0].astype(float)
    assert arr.min() == 0 and arr.max() == 255
    expected = (hu - hu.min()) / (hu.max() - hu.min()) * 255
    assert np.abs(arr - expected).max() <= 1


def test_monochrome1_is_inverted(tmp_path):
    mr = _testdata("MR_small.dcm")
    mono1 = _copy(mr, tmp_path / "mono1.dcm", PhotometricInterpretation="MONOCHROME1")
    assert np.array_equal(hio.read_dicom(mono1)[0], 255 - hio.read_dicom(mr)[0])
    real = _testdata("RG1_UNCR.dcm")                   # a MONOCHROME1 radiograph
    raw = pydicom.dcmread(real).pixel_array.astype(float).ravel()
    shown = hio.read_dicom(real)[0][..., 0].astype(float).ravel()
    assert np.corrcoef(raw, shown)[0, 1] < -0.5         # high values are shown dark


def test_multi_frame_files_decode_only_the_first_frame(tmp_path):
    from pydicom.encaps import encapsulate, generate_frames

    src = _testdata("SC_rgb_rle_2frame.dcm")
    ds = pydicom.dcmread(src)
    first = ds.pixel_array[0]
    frames = list(generate_frames(ds.PixelData, number_of_frames=2))
    ds.PixelData = encapsulate([frames[0], b"\x00" * 64])   # the second frame cannot be decoded
    ds.save_as(tmp_path / "broken_second_frame.dcm")
    arr = hio.read_dicom(tmp_path / "broken_second_frame.dcm")[0]
    assert np.array_equal(arr, first)
    emri = _testdata("emri_small.dcm")                  # 10 frames, 12-bit greyscale
    assert hio.read_dicom(emri)[0].shape == (64, 64, 3)


def test_valid_files_without_a_preamble_are_read(tmp_path):
    ds = pydicom.dcmread(_testdata("MR_small.dcm"))
    ds.preamble = None
    del ds.file_meta
    pydicom.dcmwrite(tmp_path / "no_preamble.dcm", ds, implicit_vr=False, little_endian=True)
    assert not (tmp_path / "no_preamble.dcm").read_bytes()[128:132] == b"DICM"
    arr, meta = hio.read_dicom(tmp_path / "no_preamble.dcm")
    assert np.array_equal(arr, hio.read_dicom(_testdata("MR_small.dcm"))[0])
    assert meta["patient_id"] == ds.PatientID
    folder = tmp_path / "headers"
    folder.mkdir()
    (folder / "big_endian.dcm").write_bytes(open(_testdata("ExplVR_BigEndNoMeta.dcm"), "rb").read())
    assert len(hio.dicom_summary(folder, progress=False)) == 1


def test_tfrecord_frame_refuses_a_record_of_another_task(tmp_path):
    """An object-detection shard has image/encoded and boxes but no ISIC field: refused, named."""
    jpeg = io.BytesIO()
    Image.fromarray(smooth_rgb(32, 32)).save(jpeg, format="JPEG")
    shard = write_raw_tfrecord(tmp_path / "boxes00-1.tfrec", [{
        "image/encoded": (jpeg.getvalue(), "byte"), "image/format": (b"jpeg", "byte"),
        "image/object/bbox/xmin": ([0.1], "float"), "image/object/class/label": ([3], "int")}])
    with pytest.raises(ValueError, match=r"boxes00-1\.tfrec \(record 0\): not an ISIC record, "
                                         r"no image_name, patient_id \(it has image/"):
        hio.tfrecord_frame(shard)
