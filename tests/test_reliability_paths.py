"""Reliability: image names and paths never reach outside the data folder.

* An image id in a label file is a plain file name: ``../../etc/passwd``, an
  absolute path, a Windows path or ``..`` is refused by ``read_labels`` with a
  ``ValueError`` naming the file, row, column and value (and so by every
  ``load_*`` function and the command line).
* An image file of a download folder that resolves outside the folder (a
  symlink to a file or folder elsewhere) is refused by ``load_dataset``; a
  symlink that stays inside, or a data root that is itself a symlink, is fine.
* ``LesionDataset(frame, root=...)`` refuses a ``path`` column value that
  resolves outside ``root``.
"""
from __future__ import annotations

import re

import pandas as pd
import pytest
from PIL import Image
from support import SIIM_HEADER, lesion, make_2020, write

from helpers import data as D
from helpers import datasets as ds
from helpers.__main__ import main

ESCAPES = ["../../etc/passwd", "/etc/passwd", "..", ".", "jpeg/../../../secret",
           "..\\..\\windows\\win.ini", "C:ISIC_0000001", "~root", "sub/ISIC_0000001"]


@pytest.mark.parametrize("value", ESCAPES)
def test_image_ids_with_path_parts_are_refused(tmp_path, value):
    path = write(tmp_path, "train.csv", [
        SIIM_HEADER, "ISIC_2637011,IP_7279968,male,45.0,head/neck,unknown,benign,0",
        f'"{value}",IP_3075186,,,,nevus,benign,0'])
    pattern = rf"train\.csv: row 3, column 'image_name': image id is not a plain file name.*{re.escape(repr(value))}"
    with pytest.raises(ValueError, match=pattern):
        ds.read_labels(path)


@pytest.mark.parametrize("file_name,header", [
    ("ISIC_2019_Training_GroundTruth.csv", "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"),
    ("metadata.csv", "isic_id,attribution,copyright_license,benign_malignant,diagnosis"),
    ("ISIC-2017_Training_Part3_GroundTruth.csv", "image_id,melanoma,seborrheic_keratosis"),
])
def test_every_id_column_is_checked(tmp_path, file_name, header):
    cells = {"image": "../../etc/passwd", "isic_id": "/etc/passwd", "image_id": "../x"}
    first = header.split(",")[0]
    rest = {"image": "1,0,0,0,0,0,0,0,0", "isic_id": "Anonymous,CC-0,benign,nevus",
            "image_id": "0,0"}[first]
    path = write(tmp_path, file_name, [header, f"{cells[first]},{rest}"])
    with pytest.raises(ValueError, match=rf"row 2, column '{first}': image id is not a plain"):
        ds.read_labels(path)


def test_load_dataset_and_the_command_line_refuse_an_escaping_id(tmp_path, capsys):
    root = make_2020(tmp_path / "siim")
    train = (root / "train.csv").read_text().replace("ISIC_0015719", "../../../etc/passwd")
    (root / "train.csv").write_text(train)
    with pytest.raises(ValueError, match=r"train\.csv: row 3, column 'image_name'.*etc/passwd"):
        ds.load_dataset(root)
    assert main(["train", "--data-dir", str(root), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "row 3, column 'image_name'" in err and "Traceback" not in err


def _secret(folder):
    folder.mkdir(parents=True, exist_ok=True)
    secret = folder / "secret.jpg"
    Image.fromarray(lesion(16, 16, 0)).save(secret)
    return secret


def test_a_symlinked_image_pointing_outside_is_refused(tmp_path, capsys):
    root = make_2020(tmp_path / "siim")
    secret = _secret(tmp_path / "elsewhere")
    link = root / "jpeg" / "train" / "ISIC_2637011.jpg"
    link.unlink()
    link.symlink_to(secret)
    with pytest.raises(ValueError, match=r"ISIC_2637011\.jpg: image 'ISIC_2637011' resolves to "
                                         r".*elsewhere/secret\.jpg, outside the data folder"):
        ds.load_dataset(root)
    assert main(["train", "--data-dir", str(root), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outside the data folder" in err


def test_a_symlinked_folder_pointing_outside_is_refused(tmp_path):
    root = make_2020(tmp_path / "siim")
    outside = tmp_path / "elsewhere" / "test"
    outside.mkdir(parents=True)
    (root / "jpeg" / "test" / "ISIC_0052060.jpg").rename(outside / "ISIC_0052060.jpg")
    (root / "jpeg" / "test").rmdir()
    (root / "jpeg" / "test").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match=r"image 'ISIC_0052060' resolves to .*outside the data folder"):
        ds.load_dataset(root)


def test_symlinks_inside_the_folder_and_a_symlinked_root_are_fine(tmp_path):
    root = make_2020(tmp_path / "siim")
    spare = root / "spare"
    spare.mkdir()
    link = root / "jpeg" / "train" / "ISIC_2637011.jpg"
    link.rename(spare / "ISIC_2637011.jpg")
    link.symlink_to(spare / "ISIC_2637011.jpg")           # points inside the folder: allowed
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)      # the whole download linked: allowed
    for folder in (root, alias):
        frame = ds.load_dataset(folder, strict=True)
        assert frame["path"].notna().all() and len(frame) == 4


ROOT_ESCAPES = {"parent": "../../etc/passwd", "absolute": "/etc/passwd",
                "symlink": "link.jpg"}


@pytest.mark.parametrize("kind", sorted(ROOT_ESCAPES))
def test_lesion_dataset_with_a_root_refuses_paths_outside_it(tmp_path, kind):
    root = tmp_path / "data"
    root.mkdir()
    for i in range(2):
        Image.fromarray(lesion(16, 16, i)).save(root / f"ISIC_{i:07d}.jpg")
    (root / "link.jpg").symlink_to(_secret(tmp_path / "elsewhere"))
    value = ROOT_ESCAPES[kind]
    frame = pd.DataFrame({"path": ["ISIC_0000000.jpg", str(root / "ISIC_0000001.jpg"), value],
                          "target": [0, 1, 0]})
    with pytest.raises(ValueError, match=rf"row 2, column 'path': {re.escape(repr(value))} lies "
                                         r"outside the data folder"):
        D.LesionDataset(frame, D.eval_transforms(16), root=root)
    good = D.LesionDataset(frame.iloc[:2], D.eval_transforms(16), root=root)
    assert [good[i]["image"].shape for i in range(2)] == [(3, 16, 16)] * 2   # relative and absolute
    assert len(D.LesionDataset(frame, D.eval_transforms(16))) == 3   # no root: paths are trusted
