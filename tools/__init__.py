"""Tools the maintainers run, outside the ``helpers`` package that the chapters import.

* ``python -m tools.samples data_samples/`` (``make samples``) writes the synthetic sample
  folders of ``data_samples/`` in every official ISIC layout;
* :mod:`tools.writers` writes the SIIM-ISIC 2020 DICOM files and TFRecord shards that the
  samples and the tests need (``helpers.io`` only reads them).
"""
