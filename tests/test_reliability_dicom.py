"""Reliability: DICOM files that cannot be read give a clear error naming the file.

No pixel data, a transfer syntax no installed decoder supports, a truncated
file, or bytes that are not DICOM at all: ``read_dicom``, ``read_image``,
``read_image_tensor`` (the training road) and, for unreadable headers,
``dicom_summary`` raise a ``ValueError`` naming the file and the problem; in a
training epoch such a file is skipped like any other unreadable image.
"""
from __future__ import annotations

import io

import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLSLossless
from support import smooth_rgb

from helpers import data as D
from helpers import io as hio

META = {"image_name": "ISIC_0001234", "patient_id": "IP_0004567", "sex": "male",
        "age_approx": 45.0, "anatom_site_general_challenge": "upper extremity"}


def _valid(path):
    hio.write_dicom(path, smooth_rgb(16, 16), META)
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
