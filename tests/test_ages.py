import math

import numpy as np
import pytest

from age_cgan.ages import PAPER_BINS, AgeBins


def test_paper_bins_boundaries():
    ages = [0, 18, 18.9, 19, 29, 30, 39, 40, 49, 50, 59, 60, 99, 100]
    expected = [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5]
    assert PAPER_BINS.category(ages).tolist() == expected
    assert PAPER_BINS.num_ages == 6
    assert PAPER_BINS.labels == ["0-18", "19-29", "30-39", "40-49", "50-59", "60+"]


def test_invalid_ages_have_no_category():
    # The book gives an age <= 0 the previous image's category; we refuse negative, NaN, > 100.
    assert PAPER_BINS.category([-3, -0.5, float("nan"), 101, 130]).tolist() == [-1] * 5


def test_custom_bins_with_gaps():
    bins = AgeBins.parse("20-30,40-50")
    assert bins.num_ages == 2
    assert bins.category([19, 20, 30, 31, 39, 40, 50, 51]).tolist() == [-1, 0, 0, -1, -1, 1, 1, -1]
    assert bins.spec == "20-30,40-50"
    assert bins.centres().tolist() == [25.0, 45.0]


def test_parse_round_trip_and_errors():
    assert AgeBins.parse(PAPER_BINS.spec) == PAPER_BINS
    assert AgeBins.parse(None) == PAPER_BINS
    assert PAPER_BINS.ranges[-1] == (60, math.inf)
    for bad in ["20-10", "0-20,15-30", "abc", "10-"]:
        with pytest.raises(ValueError):
            AgeBins.parse(bad)


def test_one_hot():
    hot = PAPER_BINS.one_hot([0, 5, 2])
    assert hot.dtype == np.float32 and hot.shape == (3, 6)
    assert hot.argmax(-1).tolist() == [0, 5, 2] and hot.sum() == 3
    with pytest.raises(ValueError):
        PAPER_BINS.one_hot([-1])
