"""What a site's failure means for the run, and what the ledger records of each reply (Flower-free)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedforget.recon.hdf5io import DataFileError, check_slice_values
from fedforget.strategies.protocol import (
    CODE,
    DATA,
    FAULT,
    SiteCodeError,
    SiteDataError,
    SiteError,
    error_content,
    record_forms,
    reply_failure,
)


def _failure_of(err: BaseException):
    try:
        raise err
    except BaseException as raised:  # noqa: BLE001 - a real traceback, as at a site
        return reply_failure(error_content("brain-0", raised), "node-1")


def test_bad_data_stops_the_run_naming_the_file_slice_and_problem(tmp_path: Path) -> None:
    kspace = np.ones((2, 4, 4), dtype=np.complex64)
    kspace[0, 1, 1] = np.nan
    with pytest.raises(DataFileError) as caught:
        check_slice_values(tmp_path / "vol.h5", 3, kspace)
    failure = _failure_of(caught.value)
    assert failure.kind == DATA and failure.site == "brain-0"
    stop = failure.fatal()
    assert isinstance(stop, SiteDataError)
    assert stop.status_details == {"error_kind": DATA, "site": "brain-0", "file": str(tmp_path / "vol.h5"),
                                   "slice": 3, "problem": "dataset 'kspace' contains NaN or inf in slice 3"}
    assert str(tmp_path / "vol.h5") in str(stop) and "slice 3" in str(stop)


@pytest.mark.parametrize("err", [SiteError("brain-0", "node unavailable"), OSError("disk gone"), MemoryError()])
def test_site_faults_are_recorded_not_fatal(err: BaseException) -> None:
    failure = _failure_of(err)
    assert failure.kind == FAULT and failure.fatal() is None


def test_a_programming_error_stops_the_run_with_the_sites_traceback() -> None:
    def buggy() -> None:
        {}["missing-key"]

    try:
        buggy()
    except KeyError as err:
        failure = reply_failure(error_content("knee-0", err), "node-2")
    assert failure.kind == CODE
    stop = failure.fatal()
    assert isinstance(stop, SiteCodeError) and stop.site == "knee-0"
    assert "in buggy" in stop.status_details["site_traceback"] and "KeyError" in stop.reason


def test_a_normal_reply_is_no_failure_and_its_records_are_described_without_values() -> None:
    content = RecordDict({"arrays": ArrayRecord({"w": torch.zeros(3, 2)}),
                          "metrics": MetricRecord({"loss": 0.5, "num-examples": 4}),
                          "data": ConfigRecord({"train-files": ["a.h5", "b.h5"], "train-folder": "/x"})})
    assert reply_failure(content, "node-1") is None
    assert record_forms(content) == {
        "arrays": {"kind": "ArrayRecord", "arrays": 1},
        "metrics": {"kind": "MetricRecord", "keys": {"loss": ["float", 1], "num-examples": ["int", 1]}},
        "data": {"kind": "ConfigRecord", "keys": {"train-files": ["list[str]", 2], "train-folder": ["str", 2]}},
    }
