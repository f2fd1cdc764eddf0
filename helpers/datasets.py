"""Read every official ISIC label and metadata file into one tidy table.

:func:`read_labels` reads one official CSV (any challenge year, the Kaggle SIIM-ISIC files,
HAM10000, an ``isic image download`` ``metadata.csv``), recognised from its header through the
registry :data:`FORMATS`; it checks every value and returns the file's own columns, typed.
:func:`to_tidy` maps that onto :data:`TIDY_COLUMNS`. :func:`load_dataset` reads one official
download folder (a layout of ``data_samples/``) and attaches image paths, :func:`load_all` a
folder of such folders, and :func:`combine` keeps one row per image and flags the SIIM-ISIC 2020
duplicates. How each dataset maps onto the tidy schema: appendix/datasets.md.

Introduced in chapter 3 (the ISIC Archive and its challenges).
"""
from __future__ import annotations

import csv
import functools
import io
import os
import re
import typing
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from isic_metadata import FIELD_REGISTRY
from isic_metadata.anatom_site_hierarchical import AnatomSiteEnum
from isic_metadata.diagnosis_hierarchical import DiagnosisEnum
from isic_metadata.fields import AnatomSiteGeneralEnum, LegacyDxEnum
from isic_metadata.metadata import MetadataRow
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from helpers import display_path
from helpers.io import hdf5_keys
from helpers.vocab import CLASSES_2018, LABELS, SITES

__all__ = [
    "TIDY_COLUMNS", "DATASETS", "LABELS", "SITES", "FORMATS", "LAYOUTS", "DERMAMNIST_LABELS",
    "PREFERENCE", "SEXES", "GENERAL_SITES", "HAM10000_SITES", "LEGACY_LABELS", "HIERARCHY_LABELS",
    "VOCABULARIES", "TBP_COLUMNS", "ISIC2024_FEATURES", "HEADER_ALIASES", "LabelFormat",
    "MissingImagesWarning", "detect_format", "read_labels", "to_tidy", "detect_layout",
    "load_dataset", "load_all", "load_isic_2024", "combine", "read_dermamnist", "read_masks",
]

#: Columns of the tidy frame, in order (``combine`` appends ``duplicate``; ISIC 2024 rows keep
#: :data:`ISIC2024_FEATURES` after them). ``image_id`` drops the ``_downsampled`` suffix of some
#: 2019 ids that ``source_id`` keeps; ``anatom_site`` is one of :data:`SITES` (the source's word
#: stays in ``anatom_site_original``); ``label`` an ISIC 2019 code (:data:`LABELS`); ``target``
#: (Int8) 1 for melanoma, 0 not, <NA> unknown (isic2024: the challenge's 1 = malignant);
#: ``age_approx`` float64 years; every other column is a string (<NA> when missing).
TIDY_COLUMNS: tuple[str, ...] = (
    "image_id", "source_id", "dataset", "split", "patient_id", "lesion_id",
    "sex", "age_approx", "anatom_site", "anatom_site_original",
    "diagnosis", "label", "target", "path",
)

#: Values of the tidy ``dataset`` column.
DATASETS: tuple[str, ...] = ("isic2016", "isic2017", "isic2018", "ham10000", "isic2019",
                             "siim-isic-2020", "isic-archive", "isic2024")

#: Harmonised name of each class, used as ``diagnosis`` when a source only
#: gives the class (2017-2019 ground truth, HAM10000 ``dx``).
LABEL_DIAGNOSIS: dict[str, str] = {
    "MEL": "melanoma", "NV": "nevus", "BCC": "basal cell carcinoma",
    "AK": "actinic keratosis", "BKL": "benign keratosis", "DF": "dermatofibroma",
    "VASC": "vascular lesion", "SCC": "squamous cell carcinoma", "UNK": "other",
}

#: Sex values (from isic-metadata's ``MetadataRow.sex``).
SEXES: tuple[str, ...] = typing.get_args(typing.get_args(MetadataRow.model_fields["sex"].annotation)[0])

#: 2019 / archive ``anatom_site_general`` (isic-metadata) -> harmonised site.
GENERAL_SITES: dict[str, str] = {e.value: "torso" if e.value.endswith("torso") else e.value
                                 for e in AnatomSiteGeneralEnum}

#: HAM10000 ``localization`` -> harmonised site (``unknown`` is missing).
HAM10000_SITES: dict[str, str] = {
    "scalp": "head/neck", "ear": "head/neck", "face": "head/neck", "neck": "head/neck",
    "back": "torso", "trunk": "torso", "chest": "torso", "abdomen": "torso",
    "upper extremity": "upper extremity", "hand": "upper extremity",
    "lower extremity": "lower extremity", "foot": "lower extremity",
    "acral": "palms/soles", "genital": "oral/genital",
}

#: Today's archive ``anatom_site_1`` (isic-metadata hierarchy) -> harmonised site.
HIERARCHY_SITES: dict[str, str] = {AnatomSiteEnum[name].value: site for name, site in (
    ("head_and_neck", "head/neck"), ("trunk", "torso"), ("upper_extremity", "upper extremity"),
    ("lower_extremity", "lower extremity"), ("anogenital_region", "oral/genital"))}

SITE_MAP: dict[str, str] = {**{s: s for s in SITES}, **GENERAL_SITES, **HAM10000_SITES,
                            **HIERARCHY_SITES}

#: HAM10000 / ISIC 2018 ``dx`` codes -> ISIC 2019 label.
HAM10000_DX: dict[str, str] = {
    "akiec": "AK", "bcc": "BCC", "bkl": "BKL", "df": "DF", "mel": "MEL", "nv": "NV", "vasc": "VASC",
}
#: 2018's AKIEC also holds intraepithelial carcinoma (Bowen's disease).
AKIEC_DIAGNOSIS = "actinic keratosis / intraepithelial carcinoma"

_LEGACY_MEMBERS = {  # ISIC 2019 label -> the isic-metadata ``LegacyDxEnum`` members it takes
    "MEL": "melanoma melanoma_metastasis", "NV": "nevus nevus_spilus", "BCC": "basal_cell_carcinoma",
    "AK": "actinic_keratosis", "DF": "dermatofibroma", "SCC": "squamous_cell_carcinoma",
    "BKL": "seborrheic_keratosis solar_lentigo lentigo_nos lichenoid_keratosis pigmented_benign_keratosis",
    "VASC": "vascular_lesion angioma angiokeratoma pyogenic_granuloma",
}
#: Legacy archive / SIIM-ISIC 2020 ``diagnosis`` -> ISIC 2019 label; any other legacy diagnosis is ``UNK``.
LEGACY_LABELS: dict[str, str] = {
    **{e.value: "UNK" for e in LegacyDxEnum},
    **{LegacyDxEnum[m].value: code for code, members in _LEGACY_MEMBERS.items() for m in members.split()}}
_MELANOMAS = (LegacyDxEnum.melanoma.value, LegacyDxEnum.melanoma_metastasis.value)

_D = DiagnosisEnum
#: Nodes of today's diagnosis hierarchy (isic-metadata ``DiagnosisEnum``)
#: -> ISIC 2019 label. A path takes the label of its longest listed prefix;
#: a path with no listed prefix is ``UNK`` unless a listed node lies below it
#: (then the class is not known: <NA>, e.g. just ``Benign``).
HIERARCHY_LABELS: dict[str, str] = {
    _D.malignant_malignant_melanocytic_proliferations_melanoma.value: "MEL",
    _D.benign_benign_melanocytic_proliferations_nevus.value: "NV",
    _D.malignant_malignant_adnexal_epithelial_proliferations_follicular_basal_cell_carcinoma.value: "BCC",
    _D.indeterminate_indeterminate_epidermal_proliferations_solar_or_actinic_keratosis.value: "AK",
    _D.benign_benign_epidermal_proliferations_seborrheic_keratosis.value: "BKL",
    _D.benign_benign_epidermal_proliferations_solar_lentigo.value: "BKL",
    _D.benign_benign_epidermal_proliferations_lichen_planus_like_keratosis.value: "BKL",
    _D.benign_benign_epidermal_proliferations_pigmented_benign_keratosis.value: "BKL",
    _D.benign_flat_melanotic_pigmentations_not_melanocytic_nevus_lentigo_nos.value: "BKL",
    _D.benign_benign_soft_tissue_proliferations_fibro_histiocytic_dermatofibroma.value: "DF",
    _D.benign_benign_soft_tissue_proliferations_vascular.value: "VASC",
    _D.benign_hemorrhagic_lesions.value: "VASC",
    _D.malignant_malignant_epidermal_proliferations.value: "SCC",
}
_MELANOMA_NODE = _D.malignant_malignant_melanocytic_proliferations_melanoma.value
DIAGNOSIS_1: tuple[str, ...] = tuple(e.value for e in DiagnosisEnum if ":" not in e.value)

#: MedMNIST DermaMNIST class index -> ISIC 2019 label (MedMNIST ``INFO``:
#: 0 actinic keratoses and intraepithelial carcinoma, 1 basal cell carcinoma,
#: 2 benign keratosis-like lesions, 3 dermatofibroma, 4 melanoma,
#: 5 melanocytic nevi, 6 vascular lesions).
DERMAMNIST_LABELS: tuple[str, ...] = ("AK", "BCC", "BKL", "DF", "MEL", "NV", "VASC")

# The registry of official file formats. A column's kind says how a cell is checked and typed:
# ``id`` non-empty, unique, a plain file name (string); ``str`` free text; ``float`` (Float64),
# ``int`` (Int64) numbers; ``bool`` True/False (boolean); ``onehot`` 0 or 1, also written 0.0/1.0,
# never blank (Int8); ``sex`` male/female, any case; ``vocab:NAME`` a value of VOCABULARIES[NAME].
# Blank (and the format's other ``na_values``) is missing unless said otherwise.
VOCABULARIES: dict[str, tuple[str, ...]] = {
    "sex": SEXES, "site2020": SITES, "site_general": tuple(GENERAL_SITES),
    "localization": tuple(HAM10000_SITES), "dx": tuple(HAM10000_DX),
    "legacy_dx": tuple(e.value for e in LegacyDxEnum),
    "legacy_dx_2020": (*(e.value for e in LegacyDxEnum), "unknown"),
    "benign_malignant": ("benign", "malignant", "indeterminate", "indeterminate/benign",
                         "indeterminate/malignant"),
    "benign_malignant_2016": ("benign", "malignant"), "diagnosis_1": DIAGNOSIS_1,
    "site_1": tuple(HIERARCHY_SITES),
}


@dataclass(frozen=True)
class LabelFormat:
    """One official label / metadata file format (a row of :data:`FORMATS`).

    Not called in a chapter; used by `detect_format`.
    """

    name: str                       #: registry key
    dataset: str                    #: tidy ``dataset`` value
    columns: tuple[str, ...]        #: official columns, official order
    kinds: Mapping[str, str]        #: column -> kind (see VOCABULARIES above)
    optional: tuple[str, ...] = ()  #: columns some copies omit
    header: bool = True             #: False: no header line (ISIC 2016)
    open_ended: bool = False        #: other columns allowed (archive downloads)
    split: str | None = "train"     #: None: from the file name
    na_values: tuple[str, ...] = ("",)   #: missing markers besides blank
    onehot: str | None = None       #: "one" exactly one 1 per row, "at_most_one"
    note: str = ""
    detect: Callable[[list[str]], bool] | None = field(default=None, compare=False)

    @property
    def id_column(self) -> str:
        return next((c for c in self.columns if self.kinds.get(c) == "id"), self.columns[0])


#: The kind of a column wherever it appears (a format may override it; any other column is "str").
_COMMON_KINDS = {
    **dict.fromkeys(("image", "image_id", "image_name", "isic_id"), "id"),
    **dict.fromkeys(("age_approx", "age_approximate", "age"), "float"),
    **dict.fromkeys((*LABELS, *CLASSES_2018, "melanoma", "seborrheic_keratosis", "target"), "onehot"),
    "sex": "sex", "anatom_site_general": "vocab:site_general", "dx": "vocab:dx",
    "anatom_site_general_challenge": "vocab:site2020", "localization": "vocab:localization",
    "diagnosis": "vocab:legacy_dx_2020", "benign_malignant": "vocab:benign_malignant_2016",
}


def _format(name: str, dataset: str, columns: tuple[str, ...], kinds: Mapping[str, str] | None = None,
            **options) -> LabelFormat:
    """A row of :data:`FORMATS`: the kinds of ``columns`` from :data:`_COMMON_KINDS`, then ``kinds``."""
    return LabelFormat(name, dataset, columns,
                       {**{c: _COMMON_KINDS.get(c, "str") for c in columns}, **(kinds or {})}, **options)


_C2020 = ("image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge")
_ARCHIVE_LEGACY = ("benign_malignant", "diagnosis")
#: Every ``isic image download`` / ``isic metadata download`` file starts with these
#: (isic-cli ``_extract_metadata``); a CSV with an ``isic_id`` column but without them is
#: some other file (a prediction, a supplement) and is refused, not read as archive metadata.
_ARCHIVE_BASE = ("isic_id", "attribution", "copyright_license")
#: Archive fields typed from isic-metadata's FIELD_REGISTRY (boolean / float /
#: keyword), then the vocabularies checked here.
_ARCHIVE_KINDS = {
    **{name: {"boolean": "bool", "float": "float"}.get(f.search.es_property["type"], "str")
       for name, f in FIELD_REGISTRY.items() if f.search is not None},
    "isic_id": "id", "age_approx": "float", "sex": "sex", "anatom_site_general": "vocab:site_general",
    "anatom_site_1": "vocab:site_1", "benign_malignant": "vocab:benign_malignant",
    "diagnosis": "vocab:legacy_dx", "diagnosis_1": "vocab:diagnosis_1",
    "melanocytic": "bool", "pixels_x": "int", "pixels_y": "int",
}

#: ISIC 2024 (SLICE-3D, Kaggle ``isic-2024-challenge``) columns, in the files' order:
#: the 3D total-body-photography measurements of each lesion crop ...
TBP_COLUMNS: tuple[str, ...] = (
    "clin_size_long_diam_mm", "image_type", "tbp_tile_type",
    *(f"tbp_lv_{c}" for c in (
        "A", "Aext", "B", "Bext", "C", "Cext", "H", "Hext", "L", "Lext", "areaMM2",
        "area_perim_ratio", "color_std_mean", "deltaA", "deltaB", "deltaL", "deltaLB",
        "deltaLBnorm", "eccentricity", "location", "location_simple", "minorAxisMM",
        "nevi_confidence", "norm_border", "norm_color", "perimeterMM", "radial_color_std_max",
        "stdL", "stdLExt", "symm_2axis", "symm_2axis_angle", "x", "y", "z")))
#: ... test-metadata.csv; train-metadata.csv adds ``target`` and :data:`_TRAIN_ONLY_2024`.
_C2024 = ("isic_id", "patient_id", "age_approx", "sex", "anatom_site_general", *TBP_COLUMNS,
          "attribution", "copyright_license")
_TRAIN_ONLY_2024 = ("lesion_id", "iddx_full", *(f"iddx_{i}" for i in range(1, 6)),
                    "mel_mitotic_index", "mel_thick_mm", "tbp_lv_dnn_lesion_confidence")
_K2024 = {"iddx_1": "vocab:diagnosis_1", **{c: "float" for c in (*TBP_COLUMNS, *_TRAIN_ONLY_2024)
                                            if c.startswith(("tbp_lv_", "clin_", "mel_thick"))
                                            and "location" not in c}}
#: Columns of an ISIC 2024 file that the tidy frame keeps after :data:`TIDY_COLUMNS`.
ISIC2024_FEATURES: list[str] = [c for c in (*TBP_COLUMNS, *_TRAIN_ONLY_2024)
                                if c.startswith(("tbp_", "clin_"))]

#: Header words some public copies use for an official column (read as the official name).
HEADER_ALIASES: dict[str, str] = {"gender": "sex"}  # a common copy of ISIC_2019_Training_Metadata.csv

#: Every format read_labels knows. Header-less formats are told apart by ``detect`` on their
#: first data row; headered ones by their column set (any column order).
FORMATS: tuple[LabelFormat, ...] = (
    _format("isic2016_train", "isic2016", ("image_id", "benign_malignant"), header=False,
            note="ISBI2016_ISIC_Part3_Training_GroundTruth.csv: no header, benign/malignant",
            detect=lambda row: len(row) == 2 and row[1].strip() in ("benign", "malignant")),
    _format("isic2016_test", "isic2016", ("image_id", "melanoma"), header=False, split="test",
            note="ISBI2016_ISIC_Part3_Test_GroundTruth.csv: no header, 0.0/1.0",
            detect=lambda row: len(row) == 2 and row[1].strip() not in ("benign", "malignant")),
    _format("isic2017_ground_truth", "isic2017", ("image_id", "melanoma", "seborrheic_keratosis"),
            split=None, onehot="at_most_one",
            note="ISIC-2017_{Training,Validation,Test_v2}_Part3_GroundTruth.csv"),
    _format("isic2017_metadata", "isic2017", ("image_id", "age_approximate", "sex"), split=None,
            na_values=("", "unknown"), note="ISIC-2017_*_Data_metadata.csv; 'unknown' is missing"),
    _format("isic2018_task3_ground_truth", "isic2018", ("image", *CLASSES_2018), split=None,
            onehot="one", note="ISIC2018_Task3_{Training,Validation,Test}_GroundTruth.csv"),
    _format("isic2018_task3_lesion_groupings", "isic2018", ("image", "lesion_id", "diagnosis_confirm_type"),
            note="ISIC2018_Task3_Training_LesionGroupings.csv"),
    _format("ham10000_metadata", "ham10000",
            ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"),
            optional=("dataset",), na_values=("", "unknown"),
            note="HAM10000_metadata.csv, with or without the trailing 'dataset' column"),
    _format("isic2019_ground_truth", "isic2019", ("image", *LABELS), onehot="one",
            note="ISIC_2019_Training_GroundTruth.csv (0/1 or 0.0/1.0)"),
    _format("isic2019_metadata", "isic2019",
            ("image", "age_approx", "anatom_site_general", "lesion_id", "sex"),
            note="ISIC_2019_Training_Metadata.csv"),
    _format("isic2019_test_metadata", "isic2019", ("image", "age_approx", "anatom_site_general", "sex"),
            split="test", note="ISIC_2019_Test_Metadata.csv"),
    _format("siim2020_train", "siim-isic-2020", (*_C2020, "diagnosis", "benign_malignant", "target"),
            note="Kaggle train.csv (ages 45.0) = ISIC_2020_Training_GroundTruth.csv (ages 45)"),
    _format("siim2020_ground_truth_v2", "siim-isic-2020",
            ("image_name", "patient_id", "lesion_id", *_C2020[2:], "diagnosis", "benign_malignant",
             "target"), note="ISIC_2020_Training_GroundTruth_v2.csv (adds lesion_id)"),
    _format("siim2020_test", "siim-isic-2020", _C2020, split="test", note="Kaggle test.csv"),
    _format("siim2020_submission", "siim-isic-2020", ("image_name", "target"), {"target": "float"},
            split="test", note="Kaggle sample_submission.csv: predictions, not labels"),
    _format("siim2020_duplicates", "siim-isic-2020", ("image_name_1", "image_name_2"),
            note="ISIC_2020_Training_Duplicates.csv: pairs of the same lesion image"),
    _format("isic2024_train", "isic2024", ("isic_id", "target", *_C2024[1:], *_TRAIN_ONLY_2024),
            _K2024, note="ISIC 2024 (Kaggle) train-metadata.csv: target = malignant"),
    _format("isic2024_test", "isic2024", _C2024, _K2024, split="test",
            note="ISIC 2024 (Kaggle) test-metadata.csv"),
    _format("isic2024_submission", "isic2024", ("isic_id", "target"), {"target": "float"},
            split="test", note="ISIC 2024 sample_submission.csv: predictions, not labels"),
    # An archive file holds no ISIC 2024 measurement (an incomplete 2024 file is refused).
    _format("isic_archive_legacy", "isic-archive", _ARCHIVE_BASE, _ARCHIVE_KINDS, open_ended=True,
            note="isic image download metadata.csv, legacy benign_malignant/diagnosis",
            detect=lambda cols: not any(c.startswith("tbp_lv_") for c in cols)
            and "diagnosis_1" not in cols and any(c in cols for c in _ARCHIVE_LEGACY)),
    _format("isic_archive", "isic-archive", _ARCHIVE_BASE, _ARCHIVE_KINDS, open_ended=True,
            note="isic image download metadata.csv, today's diagnosis_1..diagnosis_5",
            detect=lambda cols: not any(c.startswith("tbp_lv_") for c in cols)
            and ("diagnosis_1" in cols or not any(c in cols for c in _ARCHIVE_LEGACY))),
)
_FORMATS_BY_NAME = {f.name: f for f in FORMATS}
_KNOWN_FORMATS = ", ".join(_FORMATS_BY_NAME)


def _read_text(path: Path) -> str:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _header(cells: Iterable[str]) -> list[str]:
    """Column names as the registry spells them (stripped, :data:`HEADER_ALIASES` applied)."""
    return [HEADER_ALIASES.get(str(c).strip(), str(c).strip()) for c in cells]


def _match_columns(columns: list[str]) -> LabelFormat | None:
    """The headered format whose columns are exactly ``columns`` (any order)."""
    cols = set(columns)
    for fmt in FORMATS:
        required = set(fmt.columns) - set(fmt.optional)
        if (fmt.header and required <= cols and (fmt.open_ended or cols <= set(fmt.columns))
                and (fmt.detect is None or fmt.detect(columns))):
            return fmt
    return None


def _near_miss(columns: list[str]) -> tuple[LabelFormat, str] | None:
    """A headered format the header almost matches: (format, first missing column)."""
    cols = set(columns)
    best = None
    for fmt in FORMATS:
        if not fmt.header or fmt.open_ended:
            continue
        required = [c for c in fmt.columns if c not in fmt.optional]
        present = [c for c in required if c in cols]
        rank = (len(required) - len(present), -len(present))  # fewest missing, then most present
        if (cols <= set(fmt.columns) and fmt.id_column in cols
                and len(present) >= max(2, len(required) / 2) and (best is None or rank < best[0])):
            best = (rank, fmt, next(c for c in required if c not in cols))
    return None if best is None else (best[1], best[2])


def detect_format(path: os.PathLike | str) -> LabelFormat:
    """Recognise which official format a label / metadata CSV is, from its header.

    Raises ``ValueError`` naming the file, the header it saw and the known
    formats when nothing matches, or the missing column when the header is
    one column short of a known format.

    Introduced in chapter 3 (the ISIC Archive and its challenges).
    """
    return _detect(Path(path), _read_text(Path(path)))


def _detect(path: Path, text: str) -> LabelFormat:
    first = next((line for line in text.split("\n") if line.strip()), None)
    if first is None:
        raise ValueError(f"{path}: empty file; known formats: {_KNOWN_FORMATS}")
    row = _header(next(csv.reader([first]), []))
    if row and re.fullmatch(r"ISIC_\d+\w*", row[0]):  # header-less: a data row comes first
        fmt = next((f for f in FORMATS if not f.header and f.detect(row)), None)
    else:
        dup = next((c for c in row if row.count(c) > 1), None)
        if dup is not None:
            raise ValueError(f"{path}: row 1, column {dup!r}: column name repeated")
        fmt = _match_columns(row)
        near = _near_miss(row) if fmt is None else None
        if near is not None:
            raise ValueError(f"{path}: row 1, column {near[1]!r}: required column missing "
                             f"(header looks like format {near[0].name})")
    if fmt is not None:
        return fmt
    known = {c for fmt in FORMATS if fmt.header for c in (*fmt.columns, *fmt.optional)}
    unknown = next((c for c in row if c not in known), None)
    where = f"row 1, column {unknown!r}: unknown column; " if unknown is not None else "row 1: "
    raise ValueError(f"{path}: {where}unrecognised label file; header {','.join(row)!r}; "
                     f"known formats: {_KNOWN_FORMATS}")


def _fail(path: Path, line: int, column: str, message: str) -> typing.NoReturn:
    raise ValueError(f"{path}: row {line}, column {column!r}: {message}")


def _fail_first(mask: pd.Series | np.ndarray, path: Path, lines: np.ndarray, column: str,
                message: str | Callable[[int], str]) -> None:
    """Raise for the first True of ``mask``; a callable ``message`` gets that row's position."""
    hits = np.flatnonzero(np.asarray(mask, dtype=bool))
    if hits.size:
        _fail(path, int(lines[hits[0]]), column, message(hits[0]) if callable(message) else message)


def _plain_name(value: str) -> bool:
    """True for an image id that can only name a file inside its folder (no path parts)."""
    return not (value in (".", "..") or any(ch in value for ch in "/\\:\0") or value.startswith("~"))


def _parse_column(values: pd.Series, kind: str, column: str, path: Path,
                  lines: np.ndarray) -> pd.Series:
    """Check and type one column of raw strings (missing already <NA>)."""
    present = values.notna()

    def bad(mask: pd.Series, message: str) -> None:
        _fail_first(mask, path, lines, column, lambda i: f"{message} (got {values.iloc[i]!r})")

    if kind == "id":
        bad(~present, "missing image id")
        bad(present & ~values.fillna("").map(_plain_name).astype(bool),
            "image id is not a plain file name (a path would reach outside the data folder)")
        _fail_first(values.duplicated(), path, lines, column, lambda i: (
            f"duplicated image id {values.iloc[i]!r} "
            f"(first on row {lines[np.argmax((values == values.iloc[i]).to_numpy(bool))]})"))
    elif kind in ("float", "int", "onehot"):
        numbers = pd.to_numeric(values, errors="coerce")
        bad(present & numbers.isna(), "not a number")
        if kind == "float":
            return numbers.astype("Float64")
        if kind == "int":
            bad(present & (numbers != numbers.round()), "not a whole number")
            return numbers.astype("Int64")
        bad(~present, "missing label")
        bad(~numbers.isin([0, 1]), "label must be 0 or 1")
        return numbers.astype("Int8")
    elif kind == "bool":
        lowered = values.str.lower()
        bad(present & ~lowered.isin(["true", "false"]), "not True/False")
        return lowered.map({"true": True, "false": False}).astype("boolean")
    elif kind == "sex":
        lowered = values.str.lower()
        bad(present & ~lowered.isin(SEXES), f"unknown sex; expected one of {SEXES}")
        return lowered.astype("string")
    elif kind.startswith("vocab:"):
        vocab = VOCABULARIES[kind[6:]]
        bad(present & ~values.isin(vocab), f"unknown value; expected one of {', '.join(vocab)}")
    return values.astype("string")


def _parse(strings: pd.DataFrame, fmt: LabelFormat, path: Path, lines: np.ndarray) -> pd.DataFrame:
    """Validate a frame of raw strings and give each column its dtype."""
    out = {}
    for column in strings.columns:
        values = strings[column].str.strip()
        out[column] = _parse_column(values.mask(values.isin(fmt.na_values)),
                                    fmt.kinds.get(column, "str"), column, path, lines)
    frame = pd.DataFrame(out, index=pd.RangeIndex(len(strings)))
    onehot = [c for c in fmt.columns if fmt.kinds.get(c) == "onehot"]
    if fmt.onehot:
        ones = frame[onehot].to_numpy() == 1
        total = ones.sum(axis=1)
        wrong = np.flatnonzero((total != 1) if fmt.onehot == "one" else (total > 1))
        if wrong.size:
            i = wrong[0]  # reported at its second 1, else at the first class
            column = onehot[np.flatnonzero(ones[i])[1]] if total[i] > 1 else onehot[0]
            expect = "exactly one" if fmt.onehot == "one" else "at most one"
            _fail(path, int(lines[i]), column,
                  f"labels are not one-hot: {expect} 1 expected, got {total[i]}")
    if fmt.name.startswith("siim2020_") and "benign_malignant" in frame and "target" in frame:
        wrong = (frame["benign_malignant"] == "malignant").astype("Int8") != frame["target"]
        if wrong.any():
            _fail_first(wrong.fillna(True), path, lines, "target", "target disagrees with benign_malignant")
    if not fmt.open_ended:  # official order, optional columns where they belong
        return frame[[c for c in fmt.columns if c in frame.columns]]
    levels = [f"diagnosis_{i}" for i in range(1, 6) if f"diagnosis_{i}" in frame]
    for deeper, shallower in zip(levels[1:], levels[:-1]):
        _fail_first(frame[deeper].notna() & frame[shallower].isna(), path, lines, deeper,
                    f"set while {shallower} is blank")
    return frame


def read_labels(path: os.PathLike | str, *, tidy: bool = False,
                split: str | None = None) -> pd.DataFrame:
    """Read any official ISIC label or metadata CSV into its official frame.

    CRLF or LF line endings, a missing final newline and a UTF-8 BOM are accepted.
    Any defect (an unknown or missing required column, a repeated image id, an id that
    is not a plain file name, a label other than 0/1, labels that are not one-hot, a
    missing target, an unknown sex / site / diagnosis) raises ``ValueError`` naming the
    file, the row (1-based line number) and the column. The frame keeps the official
    columns in official order with nullable dtypes; ``frame.attrs`` holds ``format``
    and ``source`` (the path). ``tidy=True`` returns ``to_tidy(frame, split=split)``.

    Introduced in chapter 3 (the ISIC Archive and its challenges).
    """
    path = Path(path)
    text = _read_text(path)
    fmt = _detect(path, text)
    try:
        strings = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                              header=0 if fmt.header else None,
                              names=None if fmt.header else list(fmt.columns))
    except (pd.errors.ParserError, ValueError) as exc:
        raise ValueError(f"{path}: {str(exc).strip()}") from exc
    strings.columns = _header(strings.columns)
    nonblank = np.array([i + 1 for i, line in enumerate(text.split("\n")) if line != ""])
    lines = nonblank[int(fmt.header):]
    if len(lines) != len(strings):  # quoted newlines: fall back to row arithmetic
        lines = np.arange(len(strings)) + 1 + int(fmt.header)
    frame = _parse(strings, fmt, path, lines)
    frame.attrs.update(format=fmt.name, source=str(path))
    return to_tidy(frame, split=split) if tidy else frame


def _split_from_name(source: str | None) -> str:
    words = set(re.split(r"[_\-. ]+", Path(source or "").name.lower()))
    return "val" if words & {"validation", "val"} else "test" if "test" in words else "train"


def _finish(parts: Mapping[str, object], n: int) -> pd.DataFrame:
    """Assemble tidy columns (a scalar, a column or None each), missing ones <NA>, typed."""
    frame = pd.DataFrame(index=pd.RangeIndex(n))
    for column in TIDY_COLUMNS:
        value = parts.get(column)
        value = pd.Series(pd.NA if value is None else value if np.ndim(value) == 0
                          else np.asarray(value, dtype=object), index=frame.index)
        frame[column] = (value.astype("Float64").astype("float64") if column == "age_approx"
                         else value.astype("Float64").astype("Int8") if column == "target"
                         else value.astype("string"))
    frame["image_id"] = frame["source_id"].str.replace(r"_downsampled$", "", regex=True)
    return frame


def _legacy_target(diagnosis: pd.Series, benign_malignant: pd.Series | None) -> pd.Series:
    """1 for a melanoma diagnosis, 0 for any other known one or, without one, a benign lesion."""
    mel = diagnosis.isin(_MELANOMAS)
    known = diagnosis.notna() & (diagnosis != "unknown")
    target = pd.Series(pd.NA, index=diagnosis.index, dtype="Float64")
    if benign_malignant is not None:
        target = target.mask(benign_malignant.isin(["benign", "indeterminate/benign"]), 0)
    return target.mask(known, mel.astype(float)).astype("Int8")


@functools.lru_cache(maxsize=None)
def _hierarchy_label(path: str) -> object:
    best = max((node for node in HIERARCHY_LABELS if path == node or path.startswith(node + ":")),
               key=len, default=None)
    if best is not None:
        return HIERARCHY_LABELS[best]
    return pd.NA if any(node.startswith(path + ":") for node in HIERARCHY_LABELS) else "UNK"


@functools.lru_cache(maxsize=None)
def _hierarchy_target(path: str) -> object:
    if path == _MELANOMA_NODE or path.startswith(_MELANOMA_NODE + ":"):
        return 1
    return pd.NA if _MELANOMA_NODE.startswith(path + ":") else 0  # e.g. just "Malignant": unknown


def _labels_hierarchy(frame: pd.DataFrame, prefix: str = "diagnosis_") -> dict[str, object]:
    """Today's archive diagnosis hierarchy, ``<prefix>1`` ... ``<prefix>5``."""
    levels = [frame[c].astype("string") for c in (f"{prefix}{i}" for i in range(1, 6)) if c in frame]
    path = levels[0] if levels else pd.Series(pd.NA, index=frame.index, dtype="string")
    for level in levels[1:]:
        path = path.mask(level.notna(), path + ":" + level)
    return dict(diagnosis=path.str.rsplit(":", n=1).str[-1].str.lower(),
                label=path.map(lambda p: pd.NA if pd.isna(p) else _hierarchy_label(p)),
                target=path.map(lambda p: pd.NA if pd.isna(p) else _hierarchy_target(p)))


def _labels_legacy(frame: pd.DataFrame) -> dict[str, object]:
    """A legacy archive download: ``diagnosis`` and ``benign_malignant``."""
    diagnosis = frame.get("diagnosis", pd.Series(pd.NA, index=frame.index, dtype="string"))
    return dict(diagnosis=diagnosis.str.lower(), label=diagnosis.map(LEGACY_LABELS),
                target=_legacy_target(diagnosis, frame.get("benign_malignant")))


def _labels_2016(frame: pd.DataFrame) -> dict[str, object]:
    """ISIC 2016 Part 3, melanoma or not: a benign lesion gets target 0 and no label (class unknown)."""
    test = "melanoma" in frame  # the test file has 0/1, the training file benign/malignant
    mel = frame["melanoma"] == 1 if test else frame["benign_malignant"] == "malignant"
    return dict(target=frame["melanoma"] if test else mel.astype("Int8"),
                label=pd.Series("MEL", index=frame.index).where(mel),
                diagnosis=pd.Series("melanoma", index=frame.index).where(mel))


def _labels_onehot(frame: pd.DataFrame) -> dict[str, object]:
    """A one-hot ground truth: ISIC 2017 (melanoma, seborrheic keratosis, else nevus), 2018 Task 3
    (AKIEC read as AK) and 2019."""
    codes = {"melanoma": "MEL", "seborrheic_keratosis": "BKL", "AKIEC": "AK"}
    label = pd.Series(pd.NA, index=frame.index, dtype="string")
    for column in frame.columns.drop(["image", "image_id"], errors="ignore"):
        label = label.mask(frame[column] == 1, codes.get(column, column))
    diagnosis = label.map(LABEL_DIAGNOSIS)
    if "melanoma" in frame:
        label = label.fillna("NV")
        diagnosis = label.map({"MEL": "melanoma", "BKL": "seborrheic keratosis", "NV": "nevus"})
    if "AKIEC" in frame:
        diagnosis = diagnosis.mask(label == "AK", AKIEC_DIAGNOSIS)
    return dict(label=label, diagnosis=diagnosis, target=frame["MEL" if "MEL" in frame else "melanoma"])


def _labels_ham10000(frame: pd.DataFrame) -> dict[str, object]:
    label = frame["dx"].map(HAM10000_DX)
    return dict(label=label, diagnosis=label.map(LABEL_DIAGNOSIS).mask(label == "AK", AKIEC_DIAGNOSIS),
                target=(label == "MEL").astype("Int8"))


def _labels_2020(frame: pd.DataFrame) -> dict[str, object]:
    """SIIM-ISIC 2020: ``unknown`` gives target 0 and label <NA>; ``UNK`` is kept for a known
    diagnosis outside the eight classes (e.g. cafe-au-lait macule)."""
    diagnosis = frame["diagnosis"].mask(frame["diagnosis"] == "unknown")
    return dict(diagnosis=diagnosis.str.lower(), label=diagnosis.map(LEGACY_LABELS), target=frame["target"])


#: format name -> the function that reads its diagnosis, label and target (other formats have none;
#: a sample submission's target is a prediction and is dropped).
_LABELS: dict[str, Callable[[pd.DataFrame], dict[str, object]]] = {
    "isic2016_train": _labels_2016, "isic2016_test": _labels_2016,
    "isic2017_ground_truth": _labels_onehot, "isic2018_task3_ground_truth": _labels_onehot,
    "isic2019_ground_truth": _labels_onehot, "ham10000_metadata": _labels_ham10000,
    "siim2020_train": _labels_2020, "siim2020_ground_truth_v2": _labels_2020,
    "isic_archive": _labels_hierarchy, "isic_archive_legacy": _labels_legacy,
    # ISIC 2024: iddx_1..5 are the archive's hierarchy, target the challenge's (none in the test file)
    "isic2024_train": lambda f: {**_labels_hierarchy(f, "iddx_"), "target": f["target"]},
    "isic2024_test": lambda f: {**_labels_hierarchy(f, "iddx_"), "target": None},
}
#: Official columns read as the tidy ``age_approx`` and ``anatom_site_original`` (the first present;
#: the archive's ``anatom_site_1`` fills in where ``anatom_site_general`` is blank).
_AGE_SOURCES = ("age_approx", "age_approximate", "age")
_SITE_SOURCES = ("anatom_site_general_challenge", "anatom_site_general", "localization", "anatom_site_1")


def to_tidy(frame: pd.DataFrame, *, split: str | None = None,
            dataset: str | None = None) -> pd.DataFrame:
    """Turn an official frame from :func:`read_labels` into the tidy schema.

    The format comes from ``frame.attrs["format"]`` (or, for a frame built by hand, from its
    columns). ``split`` defaults to the format's split, else to the one the file name says
    (``Validation`` -> ``val``, ``Test`` -> ``test``, else ``train``). ``path`` is left <NA>.

    Not called in a chapter; used by `read_labels`.
    """
    name = frame.attrs.get("format")
    fmt = _FORMATS_BY_NAME.get(name) if name else _match_columns(list(frame.columns))
    if fmt is None:
        raise ValueError(f"to_tidy: columns {list(frame.columns)} match no known format; "
                         f"known formats: {_KNOWN_FORMATS}")
    if fmt.name == "siim2020_duplicates":
        raise ValueError(f"{frame.attrs.get('source', 'frame')}: the duplicates file holds image "
                         "pairs, not images; pass it to combine(..., duplicates=...)")
    frame = frame.reset_index(drop=True)
    parts = {"dataset": dataset or fmt.dataset, "source_id": frame[fmt.id_column],
             "split": split or fmt.split or _split_from_name(frame.attrs.get("source")),
             **{c: frame[c] for c in ("patient_id", "lesion_id", "sex") if c in frame}}
    ages = [frame[c] for c in _AGE_SOURCES if c in frame]
    sites = [frame[c] for c in _SITE_SOURCES if c in frame]
    if ages:
        parts["age_approx"] = ages[0]
    if sites:
        parts["anatom_site_original"] = sites[0].fillna(sites[-1])
        parts["anatom_site"] = parts["anatom_site_original"].map(SITE_MAP)
    out = _finish({**parts, **_LABELS.get(fmt.name, lambda _: {})(frame)}, len(frame))
    for column in ISIC2024_FEATURES if fmt.dataset == "isic2024" else ():
        if column in frame:  # measurements as float64 (NaN), words as strings
            values = frame[column]
            out[column] = (values.to_numpy("float64", na_value=np.nan)
                           if values.dtype == "Float64" else values)
    return out


class MissingImagesWarning(UserWarning):
    """Some rows of a label file have no image file in the layout.

    Not called in a chapter; used by `_attach_paths`.
    """


def _index_images(folder: Path, suffixes: tuple[str, ...] = (".jpg", ".jpeg", ".png")) -> dict[str, Path]:
    """Map image id (file stem) -> path for every image below ``folder`` (none if it is missing)."""
    found: dict[str, Path] = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in suffixes:
                found.setdefault(stem, Path(dirpath) / name)
    return found


def _find(root: Path, name: str) -> Path | None:
    """``root/name`` or ``root/*/name`` (archives often unpack into a folder)."""
    if (root / name).is_file():
        return root / name
    return next(iter(sorted(root.glob(f"*/{name}"))), None)


def _shown(path: Path) -> str:
    """A path for messages a notebook may show: relative to the repo or data root."""
    try:
        return display_path(path)
    except ValueError:  # ISIC_DATA_DIR set to a missing folder
        return Path(path).name


def _attach_paths(frame: pd.DataFrame, index: Mapping[str, Path], *, root: Path, layout: str,
                  strict: bool) -> pd.DataFrame:
    """Fill ``path``; refuse an image file that resolves outside ``root``, report missing ones.

    A symlink inside a download folder may point anywhere; following it would read (and show,
    and train on) a file outside the data. Folders are resolved once each, files only when they
    are symlinks themselves.
    """
    frame = frame.copy()
    paths = frame["source_id"].map(lambda i: index.get(i))
    real_root, folders = os.path.realpath(root), {}
    for image_id, path in zip(frame["source_id"], paths):
        if path is None:
            continue
        folder = os.path.dirname(path)
        if folder not in folders:
            folders[folder] = os.path.realpath(folder)
        real = os.path.realpath(path) if os.path.islink(path) else os.path.join(folders[folder], path.name)
        if not Path(real).is_relative_to(real_root):
            raise ValueError(f"{path}: image {image_id!r} resolves to {real}, outside the data "
                             f"folder {root}; refused (a symlink must stay inside the folder: "
                             "link the whole download folder instead)")
    frame["path"] = paths.map(lambda p: None if p is None else p.as_posix()).astype("string")
    missing = frame.loc[frame["path"].isna(), "source_id"]
    if len(missing):
        message = (f"{_shown(root)}: {len(missing):,} of {len(frame):,} images of layout {layout} "
                   f"not found (e.g. {', '.join(missing.head(3))}); their path is <NA>")
        if strict:
            raise ValueError(message)
        warnings.warn(message, MissingImagesWarning, stacklevel=4)
    return frame


def _merge_metadata(labels: pd.DataFrame, metadata: pd.DataFrame,
                    columns: Iterable[str] = ("sex", "age_approx")) -> pd.DataFrame:
    """Fill ``columns`` of tidy ``labels`` from tidy ``metadata`` (by source_id)."""
    meta = metadata.set_index("source_id")
    out = labels.copy()
    for column in columns:
        out[column] = out[column].fillna(out["source_id"].map(meta[column])).astype(labels[column].dtype)
    return out


_PERSON_COLUMNS = ("sex", "age_approx", "anatom_site", "anatom_site_original")


def _concat(frames: list[pd.DataFrame], root: Path, layout: str) -> pd.DataFrame:
    """The tidy frames one after another (tidy columns first, then 2024's kept ones)."""
    if not frames:
        raise ValueError(f"{root}: no label file of layout {layout} found")
    out = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    return out[[*TIDY_COLUMNS, *(c for c in out.columns if c not in TIDY_COLUMNS)]]


# Each reader of a download layout returns its tidy frame and the image index {source_id: path}.
# The paths of SIIM-ISIC 2020 are ``jpeg/<split>/<id>.jpg``, else the DICOM ``<split>/<id>.dcm``.
def _read_siim_isic_2020(root: Path) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Training rows: train.csv, else the v2 ground truth (lesion_id is taken from it), else v1.

    Test rows: test.csv, else sample_submission.csv. The pairs of
    ``ISIC_2020_Training_Duplicates.csv`` go to ``frame.attrs["duplicate_pairs"]`` for combine.
    """
    v2 = _find(root, "ISIC_2020_Training_GroundTruth_v2.csv")
    train_file = _find(root, "train.csv") or v2 or _find(root, "ISIC_2020_Training_GroundTruth.csv")
    frames = []
    if train_file is not None:
        train = read_labels(train_file, tidy=True, split="train")
        if v2 is not None and train_file != v2:
            train = _merge_metadata(train, read_labels(v2, tidy=True), ["lesion_id"])
        frames.append(train)
    test_file = _find(root, "test.csv") or _find(root, "sample_submission.csv")
    if test_file is not None:
        frames.append(read_labels(test_file, tidy=True, split="test"))
    frame = _concat(frames, root, "siim-isic-2020")
    index: dict[str, Path] = {}
    for split in ("train", "test"):
        index.update({**_index_images(root / split, (".dcm",)), **_index_images(root / "jpeg" / split)})
    duplicates = _find(root, "ISIC_2020_Training_Duplicates.csv")
    if duplicates is not None:
        pairs = read_labels(duplicates)
        frame.attrs["duplicate_pairs"] = list(zip(pairs["image_name_1"], pairs["image_name_2"]))
    return frame, index


def _read_isic_2019(root: Path) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Training ground truth + metadata, test ground truth (if any) + metadata."""
    frames = []
    for split, word, meta_columns in (("train", "Training", ("lesion_id", *_PERSON_COLUMNS)),
                                      ("test", "Test", _PERSON_COLUMNS)):
        gt = _find(root, f"ISIC_2019_{word}_GroundTruth.csv")
        meta = _find(root, f"ISIC_2019_{word}_Metadata.csv")
        if gt is not None:
            part = read_labels(gt, tidy=True, split=split)
            if meta is not None:
                part = _merge_metadata(part, read_labels(meta, tidy=True, split=split), meta_columns)
            frames.append(part)
        elif meta is not None and split == "test":
            frames.append(read_labels(meta, tidy=True, split=split))
    return _concat(frames, root, "isic-2019"), {**_index_images(root / "ISIC_2019_Test_Input"),
                                                **_index_images(root / "ISIC_2019_Training_Input")}


def _read_splits(root: Path, layout: str, splits: dict[str, str], gt: str, data: str,
                 meta: str | None = None, suffixes: tuple[str, ...] = (".jpg", ".jpeg", ".png"),
                 ) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Ground truth ``gt`` (and sex and age from ``meta``, in the data folder or beside it) and the
    images in folder ``data`` of each split; ``{}`` in a name stands for the split's word."""
    frames, index = [], {}
    for split, word in splits.items():
        folder = root / data.format(word)
        index.update(_index_images(folder, suffixes))
        gt_file = _find(root, gt.format(word))
        if gt_file is None:
            continue
        part = read_labels(gt_file, tidy=True, split=split)
        meta_file = meta and (_find(folder, meta.format(word)) or _find(root, meta.format(word)))
        if meta_file:
            part = _merge_metadata(part, read_labels(meta_file, tidy=True, split=split))
        frames.append(part)
    return _concat(frames, root, layout), index


def _read_isic_2018_task3(root: Path) -> tuple[pd.DataFrame, dict[str, Path]]:
    """The three ground truths; training rows (``dataset == "isic2018"``) get lesion_id, sex, age and
    site from HAM10000_metadata.csv, else lesion_id from the lesion groupings file."""
    frame, index = _read_splits(root, "isic-2018-task3",
                                {"train": "Training", "val": "Validation", "test": "Test"},
                                "ISIC2018_Task3_{}_GroundTruth.csv", "ISIC2018_Task3_{}_Input")
    ham = _find(root, "HAM10000_metadata.csv")
    if ham is not None:
        frame = _merge_metadata(frame, read_labels(ham, tidy=True), ("lesion_id", *_PERSON_COLUMNS))
    groupings = _find(root, "ISIC2018_Task3_Training_LesionGroupings.csv")
    if groupings is not None:
        frame = _merge_metadata(frame, read_labels(groupings, tidy=True), ("lesion_id",))
    return frame, index


_read_isic_2017 = functools.partial(
    _read_splits, layout="isic-2017", splits={"train": "Training", "val": "Validation", "test": "Test_v2"},
    gt="ISIC-2017_{}_Part3_GroundTruth.csv", data="ISIC-2017_{}_Data",
    meta="ISIC-2017_{}_Data_metadata.csv", suffixes=(".jpg", ".jpeg"))
_read_isic_2016 = functools.partial(
    _read_splits, layout="isic-2016", splits={"train": "Training", "test": "Test"},
    gt="ISBI2016_ISIC_Part3_{}_GroundTruth.csv", data="ISBI2016_ISIC_Part3_{}_Data")


def _read_ham10000(root: Path) -> tuple[pd.DataFrame, dict[str, Path]]:
    """A HAM10000-only download (``dataset == "ham10000"``), every row ``train``."""
    frame = read_labels(root / "HAM10000_metadata.csv", tidy=True, split="train")
    return frame, {**_index_images(root / "HAM10000_images_part_2"),
                   **_index_images(root / "HAM10000_images_part_1")}


def _read_isic_archive(root: Path) -> tuple[pd.DataFrame, dict[str, Path]]:
    """An ``isic image download`` folder: metadata.csv beside the images; no split (all ``train``)."""
    return read_labels(root / "metadata.csv", tidy=True, split="train"), _index_images(root)


def _read_isic_2024(root: Path) -> tuple[pd.DataFrame, dict[str, Path]]:
    """train-metadata.csv and test-metadata.csv (else sample_submission.csv); images from
    ``train-image/`` when there, else ``<root>/train-image.hdf5/<isic_id>`` (helpers.io reads it)."""
    files = (_find(root, "train-metadata.csv"),
             _find(root, "test-metadata.csv") or _find(root, "sample_submission.csv"))
    frame = _concat([read_labels(f, tidy=True) for f in files if f is not None], root, "isic-2024")
    index: dict[str, Path] = {}
    for store in (_find(root, "test-image.hdf5"), _find(root, "train-image.hdf5")):
        index.update({key: store / key for key in hdf5_keys(store)} if store else {})
    index.update(_index_images(root / "train-image", (".jpg", ".jpeg")))
    return frame, index


def _has(root: Path, pattern: str) -> bool:
    return any(root.glob(pattern))


def _first_line(path: Path) -> str:
    if not path.is_file():
        return ""
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        return handle.readline()


def _is_siim(root: Path) -> bool:
    return (_has(root, "ISIC_2020_*") or (root / "tfrecords").is_dir() or (root / "jpeg").is_dir()
            or any(_first_line(root / n).startswith("image_name,") for n in ("train.csv", "test.csv")))


_Reader = Callable[[Path], tuple[pd.DataFrame, dict[str, Path]]]
#: Layout name -> (recogniser of a folder, reader of its frame and image index), in recognition order.
LAYOUTS: dict[str, tuple[Callable[[Path], bool], _Reader]] = {
    "siim-isic-2020": (_is_siim, _read_siim_isic_2020),
    "isic-2019": (lambda r: _has(r, "ISIC_2019_*"), _read_isic_2019),
    "isic-2018-task3": (lambda r: _has(r, "ISIC2018_Task3_*"), _read_isic_2018_task3),
    "ham10000": (lambda r: not _has(r, "ISIC2018_Task3_*") and _has(r, "HAM10000_metadata.csv"),
                 _read_ham10000),
    "isic-2017": (lambda r: _has(r, "ISIC-2017_*"), _read_isic_2017),
    "isic-2016": (lambda r: _has(r, "ISBI2016_ISIC_Part3_*"), _read_isic_2016),
    "isic-archive": (lambda r: _first_line(r / "metadata.csv").startswith("isic_id"), _read_isic_archive),
    "isic-2024": (lambda r: _has(r, "t*-metadata.csv") or _has(r, "t*-image.hdf5"), _read_isic_2024),
}


def _load(root: os.PathLike | str, layout: str, strict: bool) -> pd.DataFrame:
    frame, index = LAYOUTS[layout][1](Path(root))
    return _attach_paths(frame, index, root=Path(root), layout=layout, strict=strict)


def load_isic_2024(root: os.PathLike | str, strict: bool = False) -> pd.DataFrame:
    """Load an ISIC 2024 (SLICE-3D, Kaggle ``isic-2024-challenge``) folder.

    The tidy schema followed by :data:`ISIC2024_FEATURES` (float64 or strings). ``target`` is the
    challenge's: 1 = malignant (melanoma, basal or squamous cell carcinoma...); ``label`` says which
    (from ``iddx_1``...``iddx_5``; <NA> for the untested "Benign" lesions). An image inside
    ``train-image.hdf5`` has the path ``<root>/train-image.hdf5/<isic_id>``, which
    :func:`helpers.io.read_image` reads.

    Not called in a chapter; `load_dataset` reads an isic-2024 folder the same way.
    """
    return _load(root, "isic-2024", strict)


def detect_layout(root: os.PathLike | str) -> str:
    """Name the official download layout of a folder (a key of :data:`LAYOUTS`).

    Introduced in chapter 3 (the ISIC Archive and its challenges).
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    found = [name for name, (recognise, _read) in LAYOUTS.items() if recognise(root)]
    if not found:
        raise ValueError(f"{root}: not a known download layout; known layouts: "
                         f"{', '.join(LAYOUTS)} (a folder of layouts: use load_all)")
    if len(found) > 1:
        raise ValueError(f"{root}: holds files of several layouts ({', '.join(found)}); "
                         "give each its own folder (a folder of layouts: use load_all)")
    return found[0]


def load_dataset(root: os.PathLike | str, strict: bool = False) -> pd.DataFrame:
    """Recognise the layout of one download folder and load it as a tidy frame.

    Missing images are reported in one :class:`MissingImagesWarning` (count and examples; their
    ``path`` is <NA>), or raise ``ValueError`` with ``strict=True``. An image file that resolves
    outside ``root`` (a symlink pointing out of the download folder) is refused with a
    ``ValueError`` naming it: link the whole download folder, not folders inside it.

    Introduced in chapter 1 (skin disease and melanoma).
    """
    return _load(root, detect_layout(root), strict)


def load_all(root: os.PathLike | str, strict: bool = False) -> dict[str, pd.DataFrame]:
    """Load every layout folder directly inside ``root`` (e.g. ``data_samples/``).

    Returns ``{folder name: tidy frame}`` in folder-name order; folders of no known layout
    are skipped.

    Introduced in chapter 3 (the ISIC Archive and its challenges).
    """
    root = Path(root)
    out = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        try:
            layout = detect_layout(sub)
        except ValueError:
            continue
        out[sub.name] = _load(sub, layout, strict)
    if not out:
        raise ValueError(f"{root}: no folder of a known layout ({', '.join(LAYOUTS)})")
    return out


def read_masks(folder: os.PathLike | str) -> pd.DataFrame:
    """The expert lesion masks of an ISIC 2017 Part 1 ground-truth folder, one row per image.

    Columns ``image_id`` and ``mask`` (the path of ``ISIC_xxxxxxx_segmentation.png``: 0 skin,
    255 lesion), then the columns of ``original_sizes.csv`` where the folder has one. Any other
    PNG in the folder is refused with a ``ValueError`` naming it.

    Introduced in chapter 2 (dermoscopy).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{display_path(folder)}: not a folder of lesion masks")
    rows = []
    for path in sorted(folder.glob("*.png")):
        match = re.fullmatch(r"(ISIC_\d{7})_segmentation\.png", path.name)
        if match is None:
            raise ValueError(f"{display_path(path)}: not named ISIC_<7 digits>_segmentation.png")
        rows.append((match[1], path))
    if not rows:
        raise ValueError(f"{display_path(folder)}: no ISIC_*_segmentation.png mask in it")
    masks = pd.DataFrame(rows, columns=["image_id", "mask"])
    sizes = folder / "original_sizes.csv"
    if sizes.is_file():
        masks = masks.merge(pd.read_csv(sizes), on="image_id", how="left", validate="1:1")
    return masks


#: combine() keeps, for an image found in several sources, the row of the
#: first dataset here: the archive's full diagnosis hierarchy, then the nine
#: ISIC 2019 classes, the seven of 2018 / HAM10000, the SIIM-ISIC 2020
#: legacy diagnoses, the three of 2017 and the two of 2016.
PREFERENCE: tuple[str, ...] = (
    "isic-archive", "isic2019", "isic2018", "ham10000", "siim-isic-2020", "isic2017", "isic2016",
    "isic2024",
)
_FILLED = ("patient_id", "lesion_id", *_PERSON_COLUMNS)


def _duplicate_flags(frame: pd.DataFrame, pairs: Iterable[tuple[str, str]]) -> pd.Series:
    """True for every SIIM-ISIC 2020 image that repeats an earlier image of its group.

    A group is a connected component of the graph whose edges join the images of one
    ``lesion_id`` and the pairs of the duplicates file.
    """
    siim = frame["dataset"] == "siim-isic-2020"
    with_lesion = frame[siim & frame["lesion_id"].notna()]
    first = with_lesion.groupby("lesion_id", sort=False)["image_id"].transform("first")
    edges = [*zip(first, with_lesion["image_id"]),
             *((re.sub(r"_downsampled$", "", a), re.sub(r"_downsampled$", "", b)) for a, b in pairs)]
    edges = [(a, b) for a, b in edges if a != b]
    nodes = pd.Index(sorted({image for edge in edges for image in edge}))
    ends = [nodes.get_indexer([edge[k] for edge in edges]) for k in (0, 1)]
    graph = coo_matrix((np.ones(len(edges)), tuple(ends)), shape=(len(nodes), len(nodes)))
    group = frame["image_id"].map(pd.Series(connected_components(graph, directed=False)[1], index=nodes))
    return (group.notna() & group.duplicated() & siim).astype("boolean")


def combine(frames: Iterable[pd.DataFrame],
            duplicates: os.PathLike | str | pd.DataFrame | None = None) -> pd.DataFrame:
    """Merge tidy frames into one row per image and flag SIIM-ISIC 2020 duplicates.

    An image found in several sources (ISIC 2019 contains HAM10000 and the 2017 training set;
    ``_downsampled`` ids compare equal) keeps the row of the first source in :data:`PREFERENCE`
    (ties: the first frame given); its missing patient, lesion, sex, age and site are filled in
    from the dropped rows. The added boolean ``duplicate`` is True for a SIIM-ISIC 2020 image
    that shows the same lesion as an earlier row: images sharing a v2 ``lesion_id``, or pairs
    from the duplicates file (``duplicates``, or ``frame.attrs["duplicate_pairs"]`` that
    load_dataset sets); the first image of each group stays False.

    Introduced in chapter 3 (the ISIC Archive and its challenges).
    """
    frames = list(frames)
    pairs: list[tuple[str, str]] = []
    for frame in frames:
        missing = [c for c in TIDY_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"combine: a frame lacks tidy columns {missing}")
        pairs.extend(frame.attrs.get("duplicate_pairs", []))
    if duplicates is not None:
        table = duplicates if isinstance(duplicates, pd.DataFrame) else read_labels(duplicates)
        pairs.extend(zip(table["image_name_1"], table["image_name_2"]))
    if not frames:
        return _finish({}, 0).assign(duplicate=pd.Series(dtype="boolean"))
    data = pd.concat([f[list(TIDY_COLUMNS)] for f in frames], ignore_index=True)
    rank = data["dataset"].map({d: i for i, d in enumerate(PREFERENCE)}).fillna(len(PREFERENCE))
    ranked = data.iloc[np.lexsort((np.arange(len(data)), rank.to_numpy()))]
    filled = ranked.groupby("image_id", sort=False)[list(_FILLED)].first()
    keep = ranked.drop_duplicates("image_id", keep="first").sort_index()
    for column in _FILLED:
        keep[column] = keep[column].fillna(keep["image_id"].map(filled[column])).astype(
            data[column].dtype)
    keep = keep.reset_index(drop=True)
    keep["duplicate"] = _duplicate_flags(keep, pairs)
    return keep


def read_dermamnist(path: os.PathLike | str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read a MedMNIST ``dermamnist*.npz``: ``{split: (images, labels)}`` for train, val, test.

    Images are uint8 ``(N, H, W, 3)``; labels a 1-D int64 array of class indices 0-6 in
    MedMNIST order (:data:`DERMAMNIST_LABELS` gives each its ISIC 2019 code).

    Not called in a chapter.
    """
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    out = {}
    with archive:
        keys = set(archive.files)
        for split in ("train", "val", "test"):
            need = {f"{split}_images", f"{split}_labels"}
            if not need <= keys:
                raise ValueError(f"{path}: missing arrays {sorted(need - keys)}; found {sorted(keys)}")
            images = archive[f"{split}_images"]
            labels = archive[f"{split}_labels"].reshape(-1).astype(np.int64)
            if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
                raise ValueError(f"{path}: {split}_images has shape {images.shape} and dtype "
                                 f"{images.dtype}; expected uint8 (N, H, W, 3)")
            if len(labels) != len(images):
                raise ValueError(f"{path}: {split}_labels has {len(labels)} entries for "
                                 f"{len(images)} images")
            bad = np.flatnonzero((labels < 0) | (labels >= len(DERMAMNIST_LABELS)))
            if bad.size:
                raise ValueError(f"{path}: row {bad[0] + 1}, column {split}_labels: class "
                                 f"{labels[bad[0]]} outside 0-{len(DERMAMNIST_LABELS) - 1}")
            out[split] = (images, labels)
    return out
