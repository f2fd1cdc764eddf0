"""Reliability: DICOM files that cannot be read give a clear error naming the file.

No pixel data, a transfer syntax no installed decoder supports, a truncated
file, or bytes that are not DICOM at all: ``read_dicom``, ``read_image``,
``read_image_tensor`` (the training road) and, for unreadable headers,
``dicom_summary`` raise a ``ValueError`` naming the file and the problem; in a
training epoch such a file is skipped like any other unreadable image.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLSLossless
from support import smooth_rgb

from helpers import data as D
from helpers import io as hio
from tools.writers import write_dicom

META = {"image_name": "ISIC_0001234", "patient_id": "IP_0004567", "sex": "male",
        "age_approx": 45.0, "anatom_site_general_challenge": "upper extremity"}


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
