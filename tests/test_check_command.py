"""``fedforget check DIR...``: a table per folder, every problem file listed, non-zero exit on any problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from malformed_volumes import BREAKS, small_acquisition, write_good_volume

from fedforget.cli import main
from fedforget.data.inspection import check_folder


@pytest.fixture(scope="module")
def acquisition():
    return small_acquisition()


@pytest.fixture
def good_folder(tmp_path: Path, acquisition) -> Path:
    folder = tmp_path / "good"
    folder.mkdir()
    for name in ("vol000.h5", "vol001.h5"):
        write_good_volume(folder / name, acquisition)
    return folder


def _check(capsys: pytest.CaptureFixture[str], *folders: Path) -> tuple[int, str]:
    code = main(["check", *map(str, folders)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_good_folder_passes_with_its_table(good_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _check(capsys, good_folder)
    assert code == 0, out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("vol00")]
    assert rows == [["vol000.h5", "3", "4", "32x32", "32x32", "AXT2", "ok"],
                    ["vol001.h5", "3", "4", "32x32", "32x32", "AXT2", "ok"]]
    assert "2 usable volumes of 2 files, 6 slices, coils 4, k-space 32x32, recon 32x32, acquisitions AXT2" in out
    assert "0 problems" in out and "all 1 folder usable" in out


def test_every_malformed_file_of_a_folder_is_listed(tmp_path: Path, acquisition,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_good_volume(folder / "aaa_good.h5", acquisition)
    for case, (breaker, _) in BREAKS.items():
        breaker(write_good_volume(folder / f"{case}.h5", acquisition))
    code, out = _check(capsys, folder)
    assert code == 1
    problem_lines = [line.strip() for line in out.splitlines() if line.startswith("    ")]
    assert len(problem_lines) == len(BREAKS), "one line per problem file, the good one not among them"
    for case, (_, message) in BREAKS.items():
        line = next(line for line in problem_lines if line.startswith(str(folder / f"{case}.h5")))
        assert message in line and "expected" in line, (case, line)
        assert f"{case}.h5" in out.split("problems:")[0], f"{case} has no row in the table"
    assert "aaa_good.h5" in out and not any("aaa_good.h5" in line for line in problem_lines)
    assert f"1 usable volumes of {len(BREAKS) + 1} files" in out
    assert f"{len(BREAKS)} problems in 1 of 1 folder" in out


def test_the_check_scans_every_kspace_value(good_folder: Path) -> None:
    """A NaN deep in one slice is found (the run's lazy reads would only meet it mid-training)."""
    breaker, message = BREAKS["nan_kspace"]
    breaker(good_folder / "vol001.h5")
    check = check_folder(good_folder)
    assert [f.ok for f in check.files] == [True, False]
    assert message in check.files[1].problem


def test_folder_problems_and_stray_entries(tmp_path: Path, good_folder: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (good_folder / "nested").mkdir()
    (good_folder / "README.txt").write_text("notes")
    code, out = _check(capsys, tmp_path / "absent", tmp_path / "empty", good_folder)
    assert code == 1
    assert f"{tmp_path / 'absent'}: folder does not exist" in out
    assert f"{tmp_path / 'empty'}: folder is empty" in out
    assert "README.txt: is not an HDF5 file" in out and "nested: is a subdirectory" in out
    assert "2 usable volumes of 4 files" in out, "the good volumes beside the stray entries are still checked"
    assert "4 problems in 3 of 3 folders" in out
    assert "Traceback" not in out
