"""helpers.vocab: the one copy of the codes every reader, metric and generator shares."""
from __future__ import annotations

from isic_metadata.fields import AnatomSiteGeneralEnum

from helpers import data, datasets, io, submissions, synthetic, vocab


def test_the_2020_tfrecord_codes_are_the_published_ones():
    # The resized 2020 TFRecords code female 0 / male 1, torso 3, melanoma 4 and unknown 8.
    assert vocab.TFREC_SEX == ("female", "male") and vocab.TFREC_SITES[3] == "torso"
    assert vocab.TFREC_DIAGNOSES.index("melanoma") == 4 and vocab.TFREC_DIAGNOSES.index("unknown") == 8


def test_class_codes_are_the_ground_truth_columns():
    assert vocab.LABELS == (*vocab.CLASSES_2019, "UNK") and len(set(vocab.LABELS)) == 9
    assert submissions.SUBMISSION_COLUMNS["2019"][1:] == vocab.LABELS
    assert submissions.SUBMISSION_COLUMNS["2018"][1:] == vocab.CLASSES_2018
    assert {c.upper() for c in datasets.HAM10000_DX} == set(vocab.CLASSES_2018)
    assert set(datasets.HAM10000_DX.values()) <= set(vocab.CLASSES_2019)


def test_every_source_site_maps_into_the_harmonised_sites():
    assert set(datasets.SITE_MAP.values()) == set(vocab.SITES)
    assert {datasets.SITE_MAP[e.value] for e in AnatomSiteGeneralEnum} <= set(vocab.SITES)


def test_the_modules_share_the_same_objects():
    # one copy: the modules re-export vocab's tuples, they do not define their own
    assert data.CLASSES_2019 is vocab.CLASSES_2019 and synthetic.CLASSES is vocab.CLASSES_2019
    assert data.META_SITES is vocab.SITES is datasets.SITES and data.META_SEXES is vocab.SEXES
    assert io.TFREC_DIAGNOSES is vocab.TFREC_DIAGNOSES and data.IMAGENET_MEAN is vocab.IMAGENET_MEAN
