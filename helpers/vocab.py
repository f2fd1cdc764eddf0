"""The vocabulary the ISIC datasets share, one copy of each, imported by every module that needs it.

Class codes, sexes, anatomical sites, the SIIM-ISIC 2020 TFRecord codes and ImageNet's channel statistics.
"""
from __future__ import annotations

#: The eight diagnostic classes of ISIC 2019, in the ground truth's column order.
CLASSES_2019: tuple[str, ...] = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
#: The same plus ``UNK`` (the 2019 test set's "none of the others").
LABELS: tuple[str, ...] = (*CLASSES_2019, "UNK")
#: The seven classes of ISIC 2018 Task 3 / HAM10000, in the ground truth's column order
#: (``AKIEC`` holds actinic keratoses and intraepithelial carcinoma).
CLASSES_2018: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")

#: Sexes as the challenges record them (anything else is missing).
SEXES: tuple[str, ...] = ("female", "male")
#: The harmonised anatomical sites: the SIIM-ISIC 2020 challenge's general sites.
SITES: tuple[str, ...] = (
    "head/neck", "upper extremity", "lower extremity", "torso", "palms/soles", "oral/genital",
)

# The 2020 TFRecords store sex, site and diagnosis as integers: index = code, -1 = unknown.
TFREC_SEX: tuple[str, ...] = SEXES
TFREC_SITES: tuple[str, ...] = SITES
TFREC_DIAGNOSES: tuple[str, ...] = (
    "atypical melanocytic proliferation", "cafe-au-lait macule", "lentigo NOS", "lichenoid keratosis",
    "melanoma", "nevus", "seborrheic keratosis", "solar lentigo", "unknown",
)

#: ImageNet channel means and standard deviations (pretrained weights expect inputs so scaled).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
