"""Small summaries and plots for exploring ISIC metadata: headline counts, melanoma rates with Wilson
intervals, image sizes read from file headers.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from scipy.stats import binomtest

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["images_per_patient", "summary_counts", "rate_table", "plot_rate", "image_sizes"]

#: Keys of :func:`summary_counts`, in the order the chapter prints them.
SUMMARY_KEYS: tuple[str, ...] = ("images", "melanoma", "patients", "patients with melanoma",
                                 "median images per patient")


def _need(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: the frame lacks column(s) {missing}; it has {list(frame.columns)}")


def images_per_patient(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per known ``patient_id``: ``images`` and ``melanoma``, most images first.

    Introduced in chapter 5 (exploring metadata).
    """
    _need(frame, ("patient_id", "target"), "images_per_patient")
    known = frame[frame["patient_id"].notna()]
    grouped = known.groupby("patient_id", sort=True)["target"]
    table = pd.DataFrame({"images": grouped.size(), "melanoma": grouped.sum(min_count=0)}).astype("int64")
    table = table.reset_index().sort_values(["images", "patient_id"], ascending=[False, True])
    return table.set_index("patient_id")


def summary_counts(frame: pd.DataFrame) -> dict[str, float]:
    """Headline counts of a training table, keyed as in :data:`SUMMARY_KEYS` (median NaN without patients).

    Introduced in chapter 5 (exploring metadata).
    """
    _need(frame, ("patient_id", "target"), "summary_counts")
    per_patient = images_per_patient(frame)
    return {
        "images": int(len(frame)),
        "melanoma": int((frame["target"] == 1).sum()),
        "patients": int(len(per_patient)),
        "patients with melanoma": int((per_patient["melanoma"] > 0).sum()),
        "median images per patient": float(per_patient["images"].median()) if len(per_patient) else math.nan,
    }


def rate_table(frame: pd.DataFrame, by: str | pd.Series, *, target: str = "target",
               missing: str = "missing") -> pd.DataFrame:
    """Images, melanomas and melanoma rate per value of ``by``, with a 95 % Wilson interval.

    ``by``: a column name or a Series aligned with ``frame``. Missing values form the last row,
    ``missing``; empty categories get NaN rates. Columns ``images``, ``melanoma``, ``share``,
    ``rate``, ``rate_low``, ``rate_high``; the index holds the values as strings.

    Introduced in chapter 5 (exploring metadata).
    """
    _need(frame, (target,), "rate_table")
    if isinstance(by, str):
        _need(frame, (by,), "rate_table")
        keys = frame[by]
    else:
        keys = pd.Series(by)
        if not keys.index.equals(frame.index):
            raise ValueError("rate_table: the `by` Series is not aligned with the frame's index")
    is_mel = (frame[target] == 1).fillna(False).astype("int64")
    data = pd.DataFrame({"key": keys, "mel": is_mel})
    grouped = data.groupby("key", dropna=False, observed=False, sort=True)["mel"]
    table = pd.DataFrame({"images": grouped.size(), "melanoma": grouped.sum()}).astype("int64")
    table.index = [missing if pd.isna(k) else str(k) for k in table.index]
    if missing in table.index:  # missing last
        table = pd.concat([table.drop(index=missing), table.loc[[missing]]])
    table.index.name = keys.name if keys.name is not None else "value"
    total = int(table["images"].sum())
    table["share"] = table["images"] / total if total else np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        table["rate"] = table["melanoma"] / table["images"].where(table["images"] > 0)
    bounds = [binomtest(int(k), int(n)).proportion_ci(method="wilson") if n else None
              for k, n in zip(table["melanoma"], table["images"])]
    table["rate_low"] = [b.low if b else np.nan for b in bounds]
    table["rate_high"] = [b.high if b else np.nan for b in bounds]
    return table


def plot_rate(table: pd.DataFrame, ax: Axes, title: str = "", color: str = "#b2182b") -> Axes:
    """Draw a :func:`rate_table`: image counts as bars, the rate (%) with its interval on a right axis.

    Returns the right-hand (rate) axis.

    Introduced in chapter 5 (exploring metadata).
    """
    _need(table, ("images", "rate", "rate_low", "rate_high"), "plot_rate")
    x = np.arange(len(table))
    ax.bar(x, table["images"], color="#cccccc")
    ax.set_ylabel("images")
    ax.set_xticks(x, [str(i) for i in table.index], rotation=30, ha="right", fontsize=8)
    right = ax.twinx()
    rate = 100 * table["rate"].to_numpy(dtype=float)
    err = np.vstack([rate - 100 * table["rate_low"].to_numpy(dtype=float),
                     100 * table["rate_high"].to_numpy(dtype=float) - rate])
    right.errorbar(x, rate, yerr=err, fmt="o", color=color, capsize=3, markersize=4)
    right.set_ylabel("melanoma rate (%)", color=color)
    right.set_ylim(bottom=0)
    right.grid(False)
    ax.set_title(title, fontsize=10)
    return right


def image_sizes(paths: pd.Series | Iterable[os.PathLike | str | None]) -> pd.DataFrame:
    """Width, height (Int64) and ``format`` of each image file, read from its header only (PIL).

    A missing path gives <NA>; an unreadable file raises ``ValueError`` naming it. A Series keeps its index.

    Introduced in chapter 5 (exploring metadata).
    """
    series = paths if isinstance(paths, pd.Series) else pd.Series(list(paths), dtype=object)
    rows = []
    for path in series:
        if path is None or (not isinstance(path, (str, os.PathLike)) and pd.isna(path)):
            rows.append((pd.NA, pd.NA, pd.NA))
            continue
        try:
            with Image.open(path) as image:
                rows.append((image.width, image.height, image.format))
        except (OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"{path}: cannot read the image header ({exc})") from exc
    table = pd.DataFrame(rows, columns=["width", "height", "format"], index=series.index)
    return table.astype({"width": "Int64", "height": "Int64", "format": "string"})
