"""The synthetic sample folders of ``data_samples/``: every official ISIC layout, painted.

Run by the maintainers (``make samples``, or ``python -m tools.samples data_samples/``),
never by a chapter. :func:`write_samples` writes the SIIM-ISIC 2020, 2019, 2018 (HAM10000),
2016, ISIC Archive and 2024 layouts: file names, headers, line endings and value formats as in
the official downloads, invented ids, metadata drawn from the real joint frequencies counted
in the tables below, images painted by :func:`helpers.synthetic.make_lesion`. The real ISIC
2017 data ships beside them and is never touched.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage as ndi

from helpers import REPO_ROOT
from helpers.datasets import FORMATS
from helpers.synthetic import CLASSES, MARKER, PALETTE, NevusStyle, another_photo, make_lesion, noise
from helpers.vocab import CLASSES_2018, SITES
from tools.writers import write_dicom, write_tfrecords


# =========================================================================== metadata tables
# The frequencies below are REAL. They were counted once, with a throwaway pandas
# script (value_counts / crosstab of the columns named in each comment), from the
# official files now shipped in data_samples/challenge-ground-truth/; the class totals
# come from the published counts. Regenerating data_samples/ reads only the 2017 and 2019
# files there (see _real_2017_rows).

# --- ISIC_2020_Training_GroundTruth.csv (33,126 images, 2,056 patients, 584 melanomas)
SITES_2020 = (*SITES, "")
#: images per anatom_site_general_challenge ("" = blank) for target 0 and target 1
SITE_COUNTS_2020 = {0: (1781, 4872, 8293, 16588, 370, 120, 518), 1: (74, 111, 124, 257, 5, 4, 9)}
#: patients by sex (of their first image) and by melanoma status: (no melanoma, >= 1 melanoma)
PATIENT_SEX_2020 = {"female": (809, 168), "male": (817, 260), "": (2, 0)}
#: patients by decade of their median age_approx ("" = unknown): (no melanoma, >= 1 melanoma)
PATIENT_AGE_2020 = {"": (3, 0), 0: (1, 0), 10: (11, 1), 20: (86, 12), 30: (244, 34), 40: (394, 68),
                    50: (420, 88), 60: (278, 101), 70: (158, 82), 80: (31, 34), 90: (2, 8)}
#: benign images by diagnosis
BENIGN_DIAGNOSIS_2020 = {"unknown": 27124, "nevus": 5193, "seborrheic keratosis": 135, "lentigo NOS": 44,
                         "lichenoid keratosis": 37, "solar lentigo": 7, "cafe-au-lait macule": 1,
                         "atypical melanocytic proliferation": 1}
#: an image's age_approx minus its patient's youngest: follow-up over the years
AGE_OFFSET_2020 = {0: 22938, 5: 6775, 10: 1487, 15: 1506, 20: 352}
#: images per patient, 10/25/50/75/90 % quantiles (min 2, max 115)
IMAGES_PER_PATIENT_2020 = (3, 5, 12, 22, 35)
#: melanoma patients with 1, 2, 3, 4+ melanomas
MELANOMAS_PER_PATIENT_2020 = (319, 79, 21, 9)

# --- ISIC_2019_Training_GroundTruth.csv joined with ISIC_2019_Training_Metadata.csv
SITES_2019 = ("anterior torso", "posterior torso", "lateral torso", "upper extremity", "lower extremity",
              "head/neck", "palms/soles", "oral/genital", "")
SITE_COUNTS_2019 = {
    "MEL": (1331, 430, 14, 724, 796, 880, 201, 19, 127),
    "NV": (3699, 1888, 34, 1325, 2876, 767, 168, 24, 2094),
    "BCC": (1114, 186, 0, 358, 462, 1131, 0, 0, 72),
    "AK": (92, 4, 0, 79, 66, 598, 6, 0, 22),
    "BKL": (445, 230, 6, 234, 412, 1001, 7, 14, 275),
    "DF": (43, 2, 0, 52, 138, 0, 0, 0, 4),
    "VASC": (78, 22, 0, 23, 58, 36, 3, 2, 31),
    "SCC": (113, 25, 0, 115, 182, 174, 13, 0, 6),
}
#: (female, male, blank)
SEX_COUNTS_2019 = {
    "MEL": (1980, 2461, 81), "NV": (6379, 6225, 271), "BCC": (1317, 2000, 6), "AK": (406, 458, 3),
    "BKL": (1134, 1467, 23), "DF": (117, 122, 0), "VASC": (125, 128, 0), "SCC": (203, 425, 0),
}
#: age_approx mean and standard deviation by class
AGE_2019 = {"MEL": (61, 16), "NV": (45, 16), "BCC": (66, 15), "AK": (67, 12), "BKL": (64, 15), "DF": (52, 15),
            "VASC": (53, 20), "SCC": (71, 11)}
#: the published class totals, and the part contributed by BCN20000 (lesion_id BCN_*)
CLASS_COUNTS_2019 = {"MEL": 4522, "NV": 12875, "BCC": 3323, "AK": 867, "BKL": 2624, "DF": 239, "VASC": 253, "SCC": 628}
BCN_COUNTS_2019 = {"MEL": 2857, "NV": 4206, "BCC": 2809, "AK": 737, "BKL": 1138, "DF": 124, "VASC": 111, "SCC": 431}

# --- HAM10000 = ISIC 2018 Task 3 training: published dx totals; site, sex and age from the
# HAM images inside the 2019 metadata (lesion_id HAM_*; AKIEC = 2019's AK + SCC there).
HAM_COUNTS = {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142, "df": 115}
HAM_SITES = ("anterior torso", "posterior torso", "upper extremity", "lower extremity", "head/neck", "palms/soles", "")
HAM_SITE_COUNTS = {
    "nv": (1060, 1427, 710, 1763, 256, 7, 1482), "mel": (134, 324, 214, 220, 164, 0, 57),
    "bkl": (116, 202, 118, 175, 390, 0, 98), "bcc": (65, 186, 51, 62, 134, 0, 16),
    "akiec": (17, 29, 75, 65, 140, 0, 1), "vasc": (33, 22, 16, 27, 13, 0, 31), "df": (4, 2, 24, 84, 0, 0, 1),
}
HAM_SEX_COUNTS = {"nv": (3245, 3423, 37), "mel": (424, 689, 0), "bkl": (463, 626, 10), "bcc": (197, 317, 0),
                  "akiec": (106, 221, 0), "vasc": (73, 69, 0), "df": (52, 63, 0)}
HAM_AGE = {"nv": (46, 15), "mel": (61, 15), "bkl": (64, 14), "bcc": (67, 14), "akiec": (67, 11),
           "vasc": (51, 22), "df": (53, 14)}
HAM_AKIEC_AK_SCC = (130, 197)
HAM_IMAGES_PER_LESION = {1: 5514, 2: 1423, 3: 490, 4: 34, 5: 5, 6: 4}
#: The 2019 site words as HAM10000 `localization` words (our mapping; HAM's vocabulary is finer).
HAM_LOCALIZATION = {"anterior torso": ("chest", "abdomen", "trunk"), "posterior torso": ("back",),
                    "upper extremity": ("upper extremity", "hand"), "lower extremity": ("lower extremity", "foot"),
                    "head/neck": ("face", "scalp", "neck", "ear"), "palms/soles": ("acral",), "": ("unknown",)}
#: dx_type: INVENTED approximation of the HAM10000 paper's description (malignant lesions
#: histopathology; nevi mostly follow-up or histopathology; other benign ones histopathology,
#: consensus or, for bkl, confocal) -- not counted from a file.
HAM_DX_TYPE = {"mel": {"histo": 1}, "bcc": {"histo": 1}, "akiec": {"histo": 1},
               "nv": {"follow_up": 55, "histo": 37, "consensus": 8}, "bkl": {"histo": 60, "consensus": 33, "confocal": 7},
               "df": {"histo": 55, "consensus": 45}, "vasc": {"histo": 45, "consensus": 55}}
DX_TYPE_TO_CONFIRM = {"histo": "histopathology", "follow_up": "serial imaging showing no change",
                      "consensus": "single image expert consensus",
                      "confocal": "confocal microscopy with consensus dermoscopy"}

# --- ISIC 2017 Part 3 (published: 2,000 = 374 melanoma + 254 seborrheic keratosis + 1,372 nevi)
COUNTS_2017 = {"MEL": 374, "BKL": 254, "NV": 1372}
# --- ISIC 2016 Part 3 (published: training 900 with 173 malignant; test 379 with 75 malignant)
MALIGNANT_2016 = {"train": (900, 173), "test": (379, 75)}


#: ISIC Archive diagnosis paths (diagnosis_1:diagnosis_2:diagnosis_3), checked against isic-metadata.
ARCHIVE_DIAGNOSIS = {
    "MEL": "Malignant:Malignant melanocytic proliferations (Melanoma):Melanoma Invasive",
    "NV": "Benign:Benign melanocytic proliferations:Nevus",
    "BCC": "Malignant:Malignant adnexal epithelial proliferations - Follicular:Basal cell carcinoma",
    "AK": "Indeterminate:Indeterminate epidermal proliferations:Solar or actinic keratosis",
    "BKL": "Benign:Benign epidermal proliferations:Seborrheic keratosis",
    "DF": "Benign:Benign soft tissue proliferations - Fibro-histiocytic:Dermatofibroma",
    "VASC": "Benign:Benign soft tissue proliferations - Vascular:Hemangioma",
    "SCC": "Malignant:Malignant epidermal proliferations:Squamous cell carcinoma, NOS",
}

# --- ISIC 2024 (SLICE-3D): 3D total-body-photography crops of every lesion of a patient. The value
# ranges below are INVENTED approximations around the one public test row (ISIC_0015740) and the
# Kaggle column descriptions (0-10 scales, 0-100 confidences, mm, mm^2, CIE L*a*b*); the site, tile
# and location words are those of the real files. Nothing here was counted from the real data.
SITES_2024 = {"posterior torso": ("Torso Back", ("Top Third", "Middle Third", "Bottom Third")),
              "anterior torso": ("Torso Front", ("Top Half", "Bottom Half")),
              "upper extremity": ("{side} Arm", ("Upper", "Lower")),
              "lower extremity": ("{side} Leg", ("Upper", "Lower")),
              "head/neck": ("Head & Neck", ())}
SITE_WEIGHTS_2024 = (4, 3, 3, 3, 1)
#: The measurements in which a patient's melanoma differs from that patient's other lesions
#: (the "ugly duckling"); every patient has their own baseline, so the raw values overlap across
#: patients and the values relative to the patient's own lesions separate better.
UGLY_DUCKLING_2024 = ("clin_size_long_diam_mm", "tbp_lv_areaMM2", "tbp_lv_deltaLBnorm",
                      "tbp_lv_norm_color")
MELANOMA_2024 = ("Malignant", "Malignant melanocytic proliferations (Melanoma)")
NEVUS_2024 = ("Benign", "Benign melanocytic proliferations", "Nevus")
#: Crop side in pixels (the real crops show 15 x 15 mm of skin) and its JPEG quality.
CROP_2024, CROP_MM_2024, CROP_QUALITY_2024 = 64, 15.0, 80

#: Sample sizes at scale 1 (the committed data_samples/).
SIZES = {"2020_train": 300, "2020_patients": 40, "2020_mel_patients": 32, "2020_test": 60,
         "2020_test_patients": 8, "2020_duplicates": 4, "2019_bcn": 50, "2019_test": 30,
         "2018_train": 80, "2018_val": 20, "2018_test": 20, "2017_train": 60, "2017_val": 15,
         "2017_test": 15, "2016_train": 40, "2016_test": 20, "archive": 40,
         "2024_patients": 40, "2024_mel_patients": 10, "2024_lesions": (5, 15), "2024_test": 3}


# =========================================================================== writing the samples
JPEG_QUALITY = 85
FOLDERS = ("siim-isic-2020", "isic-2019", "isic-2018-task3", "isic-2016", "isic-archive", "isic-2024")
#: Real files the generator reads: the 2019 sample reuses real ISIC 2017 training ids (as the real
#: 2019 download contains the 2017 training images) with their real 2019 rows.
REAL_2017 = REPO_ROOT / "data_samples" / "isic-2017"
REAL_2019 = REPO_ROOT / "data_samples" / "challenge-ground-truth"
HAM_DX = {"mel": "MEL", "nv": "NV", "bcc": "BCC", "akiec": "AK", "bkl": "BKL", "df": "DF", "vasc": "VASC"}
HAM_DATASETS = {"vidir_molemax": 3954, "vidir_modern": 3363, "rosendahl": 2259, "vienna_dias": 439}  # approximate


@dataclass(frozen=True)
class _Spec:
    """How to paint one image: make_lesion arguments plus an optional re-photograph seed."""

    label: str
    seed: int
    tone: float | None = None
    hair: bool | None = None
    style: NevusStyle | None = None
    photo: int | None = None  # another_photo(seed=photo) of the same lesion
    size: int = 256


def _pick(rng: np.random.Generator, names, counts):
    """One of ``names`` with probability proportional to ``counts``."""
    p = np.asarray(counts, float)
    return list(names)[int(rng.choice(len(p), p=p / p.sum()))]


def _pick_table(rng: np.random.Generator, table: dict):
    """A key of a {key: count} table with probability proportional to its count."""
    return _pick(rng, list(table), list(table.values()))


def _quota(counts: dict, n: int, floor: int) -> dict:
    """Split ``n`` images over classes in proportion to ``counts``, at least ``floor`` each."""
    keys, rest = list(counts), n - floor * len(counts)
    share = np.array(list(counts.values()), float) / sum(counts.values()) * rest
    q = np.floor(share).astype(int)
    for i in np.argsort(-(share - q), kind="stable")[: rest - q.sum()]:
        q[i] += 1
    return {k: floor + int(v) for k, v in zip(keys, q)}


class _Ids:
    """Unique invented ids (``ISIC_``/``IP_``/``IL_``/``HAM_``/``BCN_`` + 7 digits) from given ranges."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.used = rng, set()

    def take(self, n: int, lo: int, hi: int, prefix: str = "ISIC_") -> list[str]:
        out: list[str] = []
        while len(out) < n:
            k = int(self.rng.integers(lo, hi))
            if (prefix, k) not in self.used:
                self.used.add((prefix, k))
                out.append(f"{prefix}{k:07d}")
        return sorted(out)


def _age(rng: np.random.Generator, mean_sd: tuple[float, float]) -> int:
    """An age_approx: normal around the class mean, rounded to 5 years, 5..85."""
    return int(np.clip(5 * round(rng.normal(*mean_sd) / 5), 5, 85))


def _patients_2020(rng, ids: _Ids, n_images: int, n_patients: int, n_mel_patients: int, n_dup: int) -> list[dict]:
    """Rows of a 2020-style table: patients with several lesions, melanoma as the ugly duckling."""
    sexes = [_pick(rng, list(PATIENT_SEX_2020), [sum(v) for v in PATIENT_SEX_2020.values()]) for _ in range(n_patients)]
    decades = [_pick(rng, list(PATIENT_AGE_2020), [sum(v) for v in PATIENT_AGE_2020.values()]) for _ in range(n_patients)]
    sexes[0], decades[0] = "", ""  # one patient of unknown sex and age, as the real file has
    rate = lambda table, key: table[key][1] / sum(table[key])  # noqa: E731 - melanoma rate of a group
    w = np.array([rate(PATIENT_SEX_2020, s) * rate(PATIENT_AGE_2020, d) + 1e-3 for s, d in zip(sexes, decades)])
    w[0] = 0.0
    has_mel = np.zeros(n_patients, bool)
    has_mel[rng.choice(n_patients, n_mel_patients, replace=False, p=w / w.sum())] = True
    # Melanomas per melanoma patient: the real distribution, flattened (square root) to raise the count.
    k_weights = np.sqrt(MELANOMAS_PER_PATIENT_2020)
    n_mel = [1 + int(rng.choice(4, p=k_weights / k_weights.sum())) if m else 0 for m in has_mel]
    # Images per patient: the real quantiles, rescaled to the sample's total.
    raw = np.interp(rng.uniform(0.05, 0.95, n_patients), [0.1, 0.25, 0.5, 0.75, 0.9], IMAGES_PER_PATIENT_2020)
    counts = np.maximum(np.round(raw * (n_images - n_dup) / raw.sum()).astype(int), 2 * np.array(n_mel) + 2)
    while counts.sum() != n_images - n_dup:
        i = int(np.argmax(counts)) if counts.sum() > n_images - n_dup else int(np.argmin(counts))
        counts[i] += -1 if counts.sum() > n_images - n_dup else 1
    patient_ids = ids.take(n_patients, 0, 10_000_000, "IP_")
    names = list(rng.permutation(ids.take(n_images, 15_719, 10_000_000)))
    lesions = list(rng.permutation(ids.take(n_images, 0, 10_000_000, "IL_")))
    rows = []
    for p in range(n_patients):
        tone = float(rng.beta(1.3, 3.0))
        style = NevusStyle(brown=tuple(np.round(np.array(PALETTE["light brown"]) * rng.uniform(0.75, 1.15, 3), 3)),
                           size=round(float(rng.uniform(0.75, 1.25)), 3), atypia=round(float(rng.beta(1.5, 7.0)), 3))
        hairy = rng.random() < 0.3
        youngest = None if decades[p] == "" else int(decades[p]) + 5 * int(rng.integers(0, 2))
        mel_at = set(rng.choice(counts[p], n_mel[p], replace=False).tolist())
        for j in range(counts[p]):
            target = int(j in mel_at)
            diagnosis = "melanoma" if target else _pick_table(rng, BENIGN_DIAGNOSIS_2020)
            site = _pick(rng, SITES_2020, SITE_COUNTS_2020[target])
            age = None if youngest is None else min(youngest + _pick_table(rng, AGE_OFFSET_2020), 90)
            label = "MEL" if target else ("BKL" if diagnosis in ("seborrheic keratosis", "lentigo NOS",
                                          "lichenoid keratosis", "solar lentigo") else "NV")
            spec = _Spec(label, int(rng.integers(2**31)), tone, bool(rng.random() < (0.7 if hairy else 0.05)),
                         style if label == "NV" else None)
            rows.append(dict(image_name=names.pop(), patient_id=patient_ids[p], lesion_id=lesions.pop(),
                             sex=sexes[p], age_approx=age, anatom_site_general_challenge=site,
                             diagnosis=diagnosis, benign_malignant="malignant" if target else "benign",
                             target=target, spec=spec))
    if not any(r["anatom_site_general_challenge"] == "" for r in rows):
        rows[-1]["anatom_site_general_challenge"] = ""  # keep at least one blank site
    for r in [rows[i] for i in rng.choice(len(rows), n_dup, replace=False)]:  # near-identical duplicates
        dup = dict(r, image_name=names.pop(), spec=replace(r["spec"], photo=int(rng.integers(2**31))))
        dup["duplicate_of"] = r["image_name"]
        rows.append(dup)
    return [rows[i] for i in rng.permutation(len(rows))]


def _ham(rng, ids: _Ids, n_train: int, n_val: int, n_test: int) -> dict[str, list[dict]]:
    """HAM10000 / ISIC 2018 Task 3 rows: lesions with one or more images each."""
    out: dict[str, list[dict]] = {}
    for part, n, lo, hi in (("train", n_train, 24_306, 34_321), ("val", n_val, 34_321, 34_525),
                            ("test", n_test, 34_525, 36_065)):
        names = list(rng.permutation(ids.take(n, lo, hi)))
        rows = []
        for dx, quota in _quota(HAM_COUNTS, n, 2 if part == "train" else 1).items():
            while quota > 0:
                k = min(quota, _pick_table(rng, HAM_IMAGES_PER_LESION)) if part == "train" else 1
                quota -= k
                cls = HAM_DX[dx] if dx != "akiec" else _pick(rng, ("AK", "SCC"), HAM_AKIEC_AK_SCC)
                site = _pick(rng, HAM_SITES, HAM_SITE_COUNTS[dx])
                sex = _pick(rng, ("female", "male", "unknown"), HAM_SEX_COUNTS[dx])
                lesion = dict(lesion_id=ids.take(1, 0, 7_500, "HAM_")[0], dx=dx, cls=cls,
                              dx_type=_pick_table(rng, HAM_DX_TYPE[dx]), age=float(_age(rng, HAM_AGE[dx])),
                              sex=sex, site=site, localization=str(rng.choice(HAM_LOCALIZATION[site])),
                              dataset=_pick_table(rng, HAM_DATASETS))
                base = _Spec(cls, int(rng.integers(2**31)))
                for i in range(k):
                    spec = base if i == 0 else replace(base, photo=int(rng.integers(2**31)))
                    rows.append(dict(lesion, image=names.pop(), spec=spec))
        if part == "train":  # one lesion of unknown age, as in the real metadata
            rows[-1]["age"] = None
        out[part] = sorted(rows, key=lambda r: r["image"])
    return out


def _simple(rng, ids: _Ids, quota: dict, lo: int, hi: int) -> list[dict]:
    """Rows of a one-image-per-lesion set with given class quota, sorted by image id."""
    names = list(rng.permutation(ids.take(sum(quota.values()), lo, hi)))
    rows = []
    for cls, n in quota.items():
        for _ in range(n):
            sex = _pick(rng, ("female", "male", ""), SEX_COUNTS_2019[cls])
            rows.append(dict(image=names.pop(), cls=cls, age=_age(rng, AGE_2019[cls]), sex=sex,
                             site=_pick(rng, SITES_2019, SITE_COUNTS_2019[cls]),
                             spec=_Spec(cls, int(rng.integers(2**31)))))
    return sorted(rows, key=lambda r: r["image"])


def _isic2017(rng, ids: _Ids, n_train: int, n_val: int, n_test: int) -> dict[str, list[dict]]:
    """ISIC 2017 Part 3 rows (melanoma / seborrheic keratosis / nevus)."""
    out = {}
    for part, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        out[part] = _simple(rng, ids, _quota(COUNTS_2017, n, 2), 0, 16_072)
        out[part][0]["age"] = None  # 'unknown' appears in the real metadata
        out[part][-1]["sex"] = ""
    return out


def _isic2016(rng, ids: _Ids, n_train: int, n_test: int) -> dict[str, list[dict]]:
    """ISIC 2016 Part 3 rows: benign (nevus-like, some keratosis-like) or malignant (melanoma)."""
    out = {}
    for part, n in (("train", n_train), ("test", n_test)):
        total, malignant = MALIGNANT_2016[part]
        n_mal = max(1, round(n * malignant / total))
        quota = {"MEL": n_mal, "NV": n - n_mal - (n - n_mal) // 6, "BKL": (n - n_mal) // 6}
        out[part] = _simple(rng, ids, quota, 0, 11_400)
    return out


class _Painter:
    """Renders specs once (the 2019 folder reuses 2018/2017 images) and writes JPEGs."""

    def __init__(self, limit: int | None):
        self.limit, self.cache, self.count = limit, {}, {}

    def rgb(self, spec: _Spec) -> np.ndarray:
        if spec.photo is not None:
            return another_photo(self.rgb(replace(spec, photo=None)), spec.photo)
        if spec not in self.cache:
            self.cache[spec] = make_lesion(spec.label, spec.seed, spec.size, spec.tone, spec.hair, spec.style)[0]
        return self.cache[spec]

    def allowed(self, folder: Path) -> bool:
        """Count one more file in ``folder``; False once ``limit`` files were written there."""
        self.count[folder] = self.count.get(folder, 0) + 1
        return self.limit is None or self.count[folder] <= self.limit

    def jpeg(self, path: Path, spec: _Spec, size: int | None = None) -> bytes | None:
        if not self.allowed(path.parent):
            return None
        image = Image.fromarray(self.rgb(spec))
        if size is not None:
            image = image.resize((size, size), Image.Resampling.LANCZOS)
        buf = BytesIO()
        image.save(buf, format="JPEG", quality=JPEG_QUALITY)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
        return buf.getvalue()


def _csv(path: Path, frame: pd.DataFrame, crlf: bool, final_newline: bool = True, header: bool = True) -> None:
    """Write a table byte-exactly: chosen line ending, with or without the last newline."""
    text = frame.to_csv(index=False, header=header, lineterminator="\r\n" if crlf else "\n")
    if not final_newline:
        text = text.rstrip("\r\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def _ages(values, as_float: bool) -> pd.Series:
    """Ages as ``45.0`` (float) or ``45`` (nullable int); missing stays blank."""
    series = pd.Series([np.nan if v is None else v for v in values], dtype="float64")
    return series if as_float else series.astype("Int64")


def _one_hot(rows: list[dict], columns: tuple[str, ...], key: str = "cls") -> dict[str, list[float]]:
    return {c: [float(r[key] == c) for r in rows] for c in columns}


def _write_2020(root: Path, train: list[dict], test: list[dict], painter: _Painter) -> None:
    cols = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge", "diagnosis",
            "benign_malignant", "target"]
    frame = pd.DataFrame(train)
    kaggle = frame[cols].assign(age_approx=_ages(frame.age_approx, True))
    _csv(root / "train.csv", kaggle, crlf=False)
    _csv(root / "ISIC_2020_Training_GroundTruth.csv", kaggle.assign(age_approx=_ages(frame.age_approx, False)),
         crlf=True, final_newline=False)
    v2 = frame[cols[:2] + ["lesion_id"] + cols[2:]].assign(age_approx=_ages(frame.age_approx, False))
    _csv(root / "ISIC_2020_Training_GroundTruth_v2.csv", v2, crlf=True)
    dups = frame.dropna(subset=["duplicate_of"]) if "duplicate_of" in frame else frame.iloc[:0]
    _csv(root / "ISIC_2020_Training_Duplicates.csv",
         pd.DataFrame({"image_name_1": dups.duplicate_of, "image_name_2": dups.image_name}), crlf=True)
    tframe = pd.DataFrame(test)
    _csv(root / "test.csv", tframe[cols[:5]].assign(age_approx=_ages(tframe.age_approx, True)), crlf=False)
    _csv(root / "sample_submission.csv", pd.DataFrame({"image_name": tframe.image_name, "target": 0}), crlf=False)
    for part, rows in (("train", train), ("test", test)):
        records = []
        for r in sorted(rows, key=lambda r: (r["patient_id"], r["image_name"])):
            data = painter.jpeg(root / "jpeg" / part / f"{r['image_name']}.jpg", r["spec"])
            if painter.allowed(root / part):
                with warnings.catch_warnings():  # "HEAD/NECK": '/' is outside DICOM's CS characters, as in the layout
                    warnings.simplefilter("ignore", UserWarning)
                    write_dicom(root / part / f"{r['image_name']}.dcm", painter.rgb(r["spec"]),
                                    {k: r[k] for k in cols[:5]}, quality=JPEG_QUALITY)
            if data is not None:
                keep = cols[1:] if part == "train" else cols[1:5]  # test records: no diagnosis/target
                records.append({"image": data, "image_name": r["image_name"], **{k: r[k] for k in keep}})
        write_tfrecords(records, root / "tfrecords", part, per_file=80 if part == "train" else 40)


def _write_2019(root: Path, ham: list[dict], i17: list[dict], bcn: list[dict], test: list[dict],
                painter: _Painter, taken: set[str]) -> None:
    rows = []
    for r in ham:
        rows.append(dict(image=r["image"], cls=r["cls"], age=r["age"], site=r["site"], lesion_id=r["lesion_id"],
                         sex="" if r["sex"] == "unknown" else r["sex"], spec=r["spec"], size=None))
    rows += _real_2017_rows(i17, taken)
    rows += [dict(r, size=None) for r in bcn]
    rows.sort(key=lambda r: r["image"])
    for r in rows:
        painter.jpeg(root / "ISIC_2019_Training_Input" / f"{r['image']}.jpg", r["spec"], r["size"])
    gt = pd.DataFrame({"image": [r["image"] for r in rows], **_one_hot(rows, CLASSES), "UNK": 0.0})
    _csv(root / "ISIC_2019_Training_GroundTruth.csv", gt, crlf=True)
    meta = pd.DataFrame({"image": [r["image"] for r in rows], "age_approx": _ages([r["age"] for r in rows], False),
                         "anatom_site_general": [r["site"] for r in rows],
                         "lesion_id": [r["lesion_id"] for r in rows], "sex": [r["sex"] for r in rows]})
    _csv(root / "ISIC_2019_Training_Metadata.csv", meta, crlf=True)
    for r in test:
        painter.jpeg(root / "ISIC_2019_Test_Input" / f"{r['image']}.jpg", r["spec"])
    tmeta = pd.DataFrame({"image": [r["image"] for r in test], "age_approx": _ages([r["age"] for r in test], False),
                          "anatom_site_general": [r["site"] for r in test], "sex": [r["sex"] for r in test]})
    _csv(root / "ISIC_2019_Test_Metadata.csv", tmeta, crlf=True)


def _real_2017_rows(i17: list[dict], taken: set[str]) -> list[dict]:
    """Rows of the 2019 sample for ISIC 2017 training images: real ids and real 2019 rows.

    Each synthetic 2017-like row (a class and a painting seed) is matched with a real
    ISIC 2017 training image of the same class, and takes that image's row of the real
    ISIC 2019 ground truth and metadata (id with its ``_downsampled`` suffix where the
    real file has one, age, site, sex); only the pixels stay synthetic (``_downsampled``
    images are painted at 192 px, as their real copies are smaller).
    """
    gt = pd.read_csv(REAL_2019 / "ISIC_2019_Training_GroundTruth.csv")
    meta = pd.read_csv(REAL_2019 / "ISIC_2019_Training_Metadata.csv", dtype=str, keep_default_na=False)
    gt["cls"] = gt[list(CLASSES)].idxmax(axis=1)
    gt = gt.merge(meta, on="image")
    train17 = set(pd.read_csv(REAL_2017 / "ISIC-2017_Training_Part3_GroundTruth.csv").image_id)
    gt = gt[gt.image.str.removesuffix("_downsampled").isin(train17 - taken)]
    rng = np.random.default_rng(2017)
    out = []
    for cls in sorted({r["cls"] for r in i17}):
        mine = [r for r in i17 if r["cls"] == cls]
        picked = gt[gt.cls == cls].sample(len(mine), random_state=rng).sort_values("image")
        for r, (_, real) in zip(mine, picked.iterrows()):
            small = real.image.endswith("_downsampled")
            out.append(dict(image=real.image, cls=cls, spec=r["spec"], size=192 if small else None,
                            age=int(real.age_approx) if real.age_approx else None,
                            site=real.anatom_site_general, sex=real.sex, lesion_id=real.lesion_id))
    return out


def _write_2018(root: Path, ham: dict[str, list[dict]], painter: _Painter) -> None:
    akiec = {"MEL": "MEL", "NV": "NV", "BCC": "BCC", "AK": "AKIEC", "SCC": "AKIEC", "BKL": "BKL", "DF": "DF",
             "VASC": "VASC"}
    cols = CLASSES_2018
    places = {"train": ("ISIC2018_Task3_Training_Input",
                        "ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv", True),
              "val": ("ISIC2018_Task3_Validation_Input",
                      "ISIC2018_Task3_Validation_GroundTruth/ISIC2018_Task3_Validation_GroundTruth.csv", True),
              "test": ("ISIC2018_Task3_Test_Input", "ISIC2018_Task3_Test_GroundTruth.csv", False)}
    for part, (images, truth, crlf) in places.items():
        rows = [dict(r, col=akiec[r["cls"]]) for r in ham[part]]
        for r in rows:
            painter.jpeg(root / images / f"{r['image']}.jpg", r["spec"])
        gt = pd.DataFrame({"image": [r["image"] for r in rows], **_one_hot(rows, cols, "col")})
        _csv(root / truth, gt, crlf=crlf)
    train = ham["train"]
    _csv(root / "ISIC2018_Task3_Training_LesionGroupings.csv",
         pd.DataFrame({"image": [r["image"] for r in train], "lesion_id": [r["lesion_id"] for r in train],
                       "diagnosis_confirm_type": [DX_TYPE_TO_CONFIRM[r["dx_type"]] for r in train]}), crlf=True)
    by_lesion = sorted(train, key=lambda r: (r["lesion_id"], r["image"]))
    meta = pd.DataFrame({"lesion_id": [r["lesion_id"] for r in by_lesion], "image_id": [r["image"] for r in by_lesion],
                         "dx": [r["dx"] for r in by_lesion], "dx_type": [r["dx_type"] for r in by_lesion],
                         "age": _ages([r["age"] for r in by_lesion], True), "sex": [r["sex"] for r in by_lesion],
                         "localization": [r["localization"] for r in by_lesion],
                         "dataset": [r["dataset"] for r in by_lesion]})
    _csv(root / "HAM10000_metadata.csv", meta, crlf=False)


def _write_2016(root: Path, parts: dict[str, list[dict]], painter: _Painter) -> None:
    for part, name in (("train", "Training"), ("test", "Test")):
        rows = parts[part]
        for r in rows:
            painter.jpeg(root / f"ISBI2016_ISIC_Part3_{name}_Data" / f"{r['image']}.jpg", r["spec"])
        mal = [r["cls"] == "MEL" for r in rows]
        label = [("malignant" if m else "benign") for m in mal] if part == "train" else [float(m) for m in mal]
        _csv(root / f"ISBI2016_ISIC_Part3_{name}_GroundTruth.csv",
             pd.DataFrame({"image": [r["image"] for r in rows], "label": label}), crlf=False, header=False)


def _write_archive(root: Path, rows: list[dict], painter: _Painter) -> None:
    from isic_metadata.diagnosis_hierarchical import DiagnosisEnum

    known = {d.value for d in DiagnosisEnum}
    records = []
    for r in rows:
        path = ARCHIVE_DIAGNOSIS[r["cls"]]
        if path not in known:
            raise ValueError(f"ARCHIVE_DIAGNOSIS[{r['cls']!r}] = {path!r} is not in isic-metadata's vocabulary")
        levels = path.split(":") + [""] * (5 - len(path.split(":")))
        painter.jpeg(root / f"{r['image']}.jpg", r["spec"])
        malignant = levels[0] == "Malignant"
        records.append({"isic_id": r["image"], "attribution": "Synthetic (helpers.synthetic)",
                        "copyright_license": "CC-0", "age_approx": r["age"], "anatom_site_general": r["site"],
                        **{f"diagnosis_{i + 1}": levels[i] for i in range(5)},
                        "diagnosis_confirm_type": "histopathology" if malignant else r["confirm"],
                        "image_type": "dermoscopic", "lesion_id": r["lesion_id"],
                        "melanocytic": r["cls"] in ("MEL", "NV"), "patient_id": r["patient_id"],
                        "pixels_x": 256, "pixels_y": 256, "sex": r["sex"]})
    frame = pd.DataFrame(records)
    frame["age_approx"] = _ages(frame.age_approx, False)
    _csv(root / "metadata.csv", frame, crlf=True)
    (root / "attribution.txt").write_text(
        "Synthetic images by helpers.synthetic (not a real collection)\n\n"
        "These images were generated by a program and show no real person. They are\n"
        "dedicated to the public domain under CC0 1.0 Universal.\n")
    (root / "licenses").mkdir(exist_ok=True)
    (root / "licenses" / "CC-0.txt").write_text(
        "CC0 1.0 Universal (CC0 1.0) Public Domain Dedication\n\n"
        "The person who associated a work with this deed has dedicated the work to the\n"
        "public domain by waiving all of his or her rights to the work worldwide under\n"
        "copyright law, including all related and neighboring rights, to the extent\n"
        "allowed by law. Full legal code: https://creativecommons.org/publicdomain/zero/1.0/legalcode\n")


def _sig(x: float) -> float:
    """A measurement as the 2024 files write it: 7 significant digits."""
    return float(f"{x:.7g}")


def _lesions_2024(rng, ids: _Ids, patient: str, n: int, n_mel: int, age: float | None,
                  sex: str, split: str) -> list[dict]:
    """One patient's lesions: a personal baseline, and melanomas that stand out from it."""
    size0, contrast0, colour0 = rng.lognormal(np.log(3.0), 0.45), rng.uniform(3, 12), rng.uniform(0.5, 6)
    skin = np.array([rng.uniform(45, 72), rng.uniform(12, 20), rng.uniform(18, 30)])  # L*, a*, b*
    tile, side = rng.choice(["3D: white", "3D: XP"]), ("Left", "Right")
    mel_at = set(rng.choice(n, n_mel, replace=False).tolist())
    rows = []
    for j, isic_id in enumerate(rng.permutation(ids.take(n, 15_000, 10_000_000))):
        mel = j in mel_at
        size = size0 * (rng.uniform(1.5, 2.1) if mel else rng.lognormal(0, 0.2))
        contrast = contrast0 + (rng.uniform(2, 3.5) if mel else rng.normal(0, 1.0))
        colour = np.clip(colour0 + (rng.uniform(1.2, 2.2) if mel else rng.normal(0, 0.5)), 0, 10)
        minor = size * rng.uniform(0.55, 0.95)
        area = np.pi / 4 * size * minor * rng.uniform(0.9, 1.0)
        perimeter = np.pi * (1.5 * (size + minor) / 2 - np.sqrt(size * minor) / 2) * rng.uniform(1.0, 1.15)
        ext = skin + rng.normal(0, [1.5, 0.8, 1.0])
        d_l = -contrast * rng.uniform(0.75, 0.95)
        delta = np.array([d_l, rng.normal(2.5, 1.5), rng.normal(2.0, 1.5)])  # L*, a*, b* contrast
        lab = ext + delta
        site = _pick(rng, list(SITES_2024), SITE_WEIGHTS_2024)
        simple, parts = SITES_2024[site]
        simple = simple.format(side=rng.choice(side))
        location = simple if not parts else (f"{simple} {rng.choice(parts)}" if "Torso" in simple
                                             else f"{simple} - {rng.choice(parts)}")
        iddx = MELANOMA_2024 + (rng.choice(["Melanoma Invasive", "Melanoma in situ"]),) if mel else (
            NEVUS_2024 if rng.random() < 0.03 else ("Benign",))
        row = {"isic_id": str(isic_id), "target": int(mel), "patient_id": patient, "age_approx": age,
               "sex": sex, "anatom_site_general": site, "clin_size_long_diam_mm": round(size, 2),
               "image_type": "TBP tile: close-up", "tbp_tile_type": str(tile)}
        lv = {"A": lab[1], "Aext": ext[1], "B": lab[2], "Bext": ext[2],
              "C": np.hypot(lab[1], lab[2]), "Cext": np.hypot(ext[1], ext[2]),
              "H": np.degrees(np.arctan2(lab[2], lab[1])), "Hext": np.degrees(np.arctan2(ext[2], ext[1])),
              "L": lab[0], "Lext": ext[0], "areaMM2": area, "area_perim_ratio": perimeter**2 / area,
              "color_std_mean": colour * rng.uniform(0.25, 0.45), "deltaA": delta[1], "deltaB": delta[2],
              "deltaL": delta[0], "deltaLB": np.hypot(delta[0], delta[2]), "deltaLBnorm": contrast,
              "eccentricity": np.sqrt(1 - (minor / size) ** 2), "location": location,
              "location_simple": simple, "minorAxisMM": minor, "nevi_confidence": 100 * rng.beta(2, 1),
              "norm_border": np.clip(rng.normal(3, 1.2), 0, 10), "norm_color": colour,
              "perimeterMM": perimeter, "radial_color_std_max": colour * rng.uniform(0.2, 0.4),
              "stdL": rng.uniform(0.8, 2.5) + 0.3 * colour, "stdLExt": rng.uniform(1.5, 3.5),
              "symm_2axis": rng.uniform(0.15, 0.6), "symm_2axis_angle": 5 * int(rng.integers(0, 36)),
              "x": rng.uniform(-200, 200), "y": rng.uniform(200, 1700), "z": rng.uniform(-150, 150)}
        row.update({f"tbp_lv_{k}": (_sig(v) if isinstance(v, float) else v) for k, v in lv.items()})
        row.update(attribution="Synthetic (helpers.synthetic)", copyright_license="CC-0",
                   lesion_id=ids.take(1, 0, 10_000_000, "IL_")[0] if len(iddx) > 1 else "",
                   iddx_full="::".join(iddx), **{f"iddx_{i + 1}": (list(iddx) + [""] * 5)[i] for i in range(5)},
                   mel_mitotic_index="", mel_thick_mm=round(rng.uniform(0.2, 1.2), 2)
                   if "Invasive" in iddx[-1] else None,
                   tbp_lv_dnn_lesion_confidence=_sig(100 * rng.beta(8, 1)),
                   crop=(size, minor, lab, ext, colour, int(rng.integers(2**31))), split=split)
        rows.append(row)
    return rows


def _tbp_crop(size_mm: float, minor_mm: float, lesion_lab, skin_lab, colour: float, seed: int,
             px: int = CROP_2024) -> np.ndarray:
    """A synthetic 3D-TBP lesion crop: an ellipse of the given size and CIE L*a*b* colour on skin.

    The crop shows ``CROP_MM_2024`` mm of skin, like the real ISIC 2024 tiles; ``colour``
    (the 0-10 ``tbp_lv_norm_color`` scale) adds darker and lighter patches inside the
    lesion. The lesion's difference from the skin is drawn twice as strong as the values
    say, so that lesions of a few pixels stay visible in a small crop. Returns RGB uint8
    (px, px, 3); the same arguments give the same array.
    """
    from skimage.color import lab2rgb

    rng = np.random.default_rng(seed)
    scale = px / CROP_MM_2024
    yy, xx = np.mgrid[0:px, 0:px] - (px - 1) / 2
    angle = rng.uniform(0, np.pi)
    u, v = xx * np.cos(angle) + yy * np.sin(angle), -xx * np.sin(angle) + yy * np.cos(angle)
    rho = np.hypot(u / (size_mm * scale / 2), v / (minor_mm * scale / 2)) + 0.08 * noise(rng, px, 3)
    inside = ndi.gaussian_filter((rho < 1).astype(float), 1.0)
    patches = 0.1 * colour * noise(rng, px, 2.5)[..., None] * np.array([4.0, 1.0, 1.0])
    skin_lab = np.asarray(skin_lab, float)
    lab = (skin_lab * (1 + 0.02 * noise(rng, px, 6)[..., None]) * (1 - inside[..., None])
           + (2 * np.asarray(lesion_lab, float) - skin_lab + patches) * inside[..., None])
    rgb = lab2rgb(lab) + 0.01 * rng.standard_normal((px, px, 3))
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def _write_2024(root: Path, rows: list[dict], painter: _Painter) -> None:
    import h5py

    columns = {f.name: list(f.columns) for f in FORMATS}
    for split in ("train", "test"):
        part = sorted((r for r in rows if r["split"] == split), key=lambda r: r["isic_id"])
        frame = pd.DataFrame(part)
        _csv(root / f"{split}-metadata.csv", frame[columns[f"isic2024_{split}"]], crlf=False)
        with h5py.File(root / f"{split}-image.hdf5", "w") as store:
            for r in part:
                if not painter.allowed(root / f"{split}-image.hdf5"):
                    break
                buf = BytesIO()
                Image.fromarray(_tbp_crop(*r["crop"])).save(buf, format="JPEG", quality=CROP_QUALITY_2024)
                store.create_dataset(r["isic_id"], data=np.void(buf.getvalue()))
                if split == "train":
                    (root / "train-image" / "image").mkdir(parents=True, exist_ok=True)
                    (root / "train-image" / "image" / f"{r['isic_id']}.jpg").write_bytes(buf.getvalue())
    _csv(root / "sample_submission.csv",
         pd.DataFrame({"isic_id": [r["isic_id"] for r in rows if r["split"] == "test"], "target": 0.3}), crlf=False)


def _isic2024(rng, ids: _Ids) -> list[dict]:
    """ISIC 2024 rows: patients with 5-15 lesions each, melanoma as the ugly duckling; 3 test lesions."""
    n, (lo, hi) = SIZES["2024_patients"], SIZES["2024_lesions"]
    mel = set(rng.choice(n, SIZES["2024_mel_patients"], replace=False).tolist())
    rows = []
    for p, patient in enumerate(ids.take(n + SIZES["2024_test"], 0, 10_000_000, "IP_")):
        test = p >= n
        age = float(5 * rng.integers(6, 18))
        sex = "" if p == 0 else str(rng.choice(["female", "male"]))
        rows += _lesions_2024(rng, ids, patient, 1 if test else int(rng.integers(lo, hi + 1)),
                              int(p in mel), age, sex, "test" if test else "train")
    return rows


def _prepare(out_dir: Path) -> None:
    """Create ``out_dir``; clear our own sample folders, refusing to touch folders we did not make."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    ours = (out_dir / MARKER).exists()
    for name in FOLDERS:
        folder = out_dir / name
        if folder.exists() and any(folder.iterdir()):
            if not ours:
                raise ValueError(f"{folder}: exists and was not written by tools.samples; "
                                 "refusing to overwrite (choose an empty folder)")
            shutil.rmtree(folder)
    (out_dir / MARKER).write_text("Written by `python -m tools.samples`; its folders are regenerated.\n")


def write_samples(out_dir: Path, seed: int = 0, max_images: int | None = None) -> None:
    """Write every official ISIC layout, with synthetic images, into ``out_dir``.

    Folders: ``siim-isic-2020``, ``isic-2019``, ``isic-2018-task3``, ``isic-2016``,
    ``isic-archive``, ``isic-2024`` (the real ISIC 2017 data ships beside them, and the 2019 sample
    reuses real 2017 ids and rows, see :func:`_real_2017_rows`); file names, headers,
    line endings and value formats as in the official downloads (``data_samples/README.md``).
    Ids are invented, metadata follow the real frequencies in this module's
    tables, images come from :func:`make_lesion`. The same seed always gives the
    same files. ``max_images`` caps the image files per folder (the CSV files
    stay complete), for quick tests.

    """
    out_dir = Path(out_dir)
    _prepare(out_dir)
    n = SIZES
    rng = np.random.default_rng(seed)
    ids = _Ids(rng)
    train20 = _patients_2020(rng, ids, n["2020_train"], n["2020_patients"], n["2020_mel_patients"],
                             n["2020_duplicates"])
    test20 = _patients_2020(rng, ids, n["2020_test"], n["2020_test_patients"], n["2020_test_patients"] * 3 // 4, 0)
    ham = _ham(rng, ids, n["2018_train"], n["2018_val"], n["2018_test"])
    i17 = _isic2017(rng, ids, n["2017_train"], n["2017_val"], n["2017_test"])
    i16 = _isic2016(rng, ids, n["2016_train"], n["2016_test"])
    bcn = _simple(rng, ids, _quota(BCN_COUNTS_2019, n["2019_bcn"], 2), 53_000, 73_000)
    for r, lesion in zip(bcn, rng.permutation(ids.take(len(bcn), 0, 13_000, "BCN_"))):
        r["lesion_id"] = str(lesion)
    test19 = _simple(rng, ids, _quota(CLASS_COUNTS_2019, n["2019_test"], 1), 34_321, 73_000)
    archive = _simple(rng, ids, _quota(CLASS_COUNTS_2019, n["archive"], 2), 0, 10_000_000)
    for r in archive:
        r.update(patient_id=ids.take(1, 0, 10_000_000, "IP_")[0], lesion_id=ids.take(1, 0, 10_000_000, "IL_")[0],
                 confirm=_pick(rng, ("single image expert consensus", "serial imaging showing no change",
                                     "histopathology"), (2, 1, 3)))

    painter = _Painter(max_images)
    _write_2020(out_dir / "siim-isic-2020", train20, test20, painter)
    _write_2018(out_dir / "isic-2018-task3", ham, painter)
    taken = {f"{prefix}{k:07d}" for prefix, k in ids.used}      # no real id may clash with these
    _write_2019(out_dir / "isic-2019", ham["train"], i17["train"], bcn, test19, painter, taken)
    _write_2016(out_dir / "isic-2016", i16, painter)
    _write_archive(out_dir / "isic-archive", archive, painter)
    rng24 = np.random.default_rng([seed, 2024])  # its own stream: the folders above stay as they were
    ids24 = _Ids(rng24)
    ids24.used = set(ids.used)  # no id shared with another folder
    _write_2024(out_dir / "isic-2024", _isic2024(rng24, ids24), painter)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m tools.samples OUT_DIR [--seed N]``; errors give one line and exit 2.

    Used by ``make samples``.
    """

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str):  # one line instead of usage + message
            self.exit(2, f"tools.samples: error: {message}\n")

    parser = _Parser(prog="python -m tools.samples", description="Write the synthetic ISIC sample folders.")
    parser.add_argument("out_dir", type=Path, help="folder to write (e.g. data_samples/)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--max-images", type=int, default=None, help="cap image files per folder (quick tests)")
    args = parser.parse_args(argv)
    try:
        write_samples(args.out_dir, seed=args.seed, max_images=args.max_images)
    except ValueError as exc:
        print(f"tools.samples: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
