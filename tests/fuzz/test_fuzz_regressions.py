"""The seeded cases that found bugs, each pinned to the ending it has now (each ended in a
"this is a bug" line before its fix). ``SeededChoices(seed)`` makes the same file and
command line as ``test_hostile_files_end_in_one_line_seeded`` does."""

from __future__ import annotations

import pytest

from .choices import SeededChoices
from .strategies import data_file
from .test_fuzz_cli import check_file_case

FOUND = {
    # a target near 1e115: doctor's minibatch noise squared losses near 1e230
    4592: ("doctor", 0, ""),
    # a Parquet text column holding bytes that are not UTF-8
    4737: ("fit", 2, "'x': text that is not UTF-8 such as b'\\xbc' at row 3"),
    # a Parquet timestamp beyond year 9999
    6439: ("predict", 2, "'x': timestamp[ms] values such as 7205760253600724885)"),
    # a column near 1e-300 for a target near 1e15: slopes beyond float64
    7658: ("fit", 2, "the coefficient of 'x' is beyond float64's range"),
    7921: ("fit", 2, "the coefficient of 'x1' is beyond float64's range"),
    # a damaged Parquet footer that counts rows no page holds
    9150: ("predict", 2, "not a readable Parquet file (no rows, although it says it has 4)"),
}


@pytest.mark.parametrize("seed", sorted(FOUND))
def test_seeds_that_found_bugs_end_as_users_want(seed, model, tmp_path):
    command, code, message = FOUND[seed]
    c = SeededChoices(seed)
    args, got, err = check_file_case(c, data_file(c), model, tmp_path)
    assert (args[0], got) == (command, code), err
    assert message in err, err
