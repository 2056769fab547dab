"""What ``fedforget check`` prints: one table per folder, then every problem, one line per file."""

from __future__ import annotations

from fedforget.data.inspection import FileCheck, FolderCheck

_COLUMNS = f"{'file':<28} {'slices':>6} {'coils':>5} {'k-space':>9} {'recon':>9} {'acquisition':<14} status"


def _size(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def _sizes(shapes: list[tuple[int, int]]) -> str:
    return ", ".join(_size(s) for s in shapes) or "-"


def _row(check: FileCheck) -> str:
    name = check.path.name
    if check.info is None:
        return f"{name:<28} {'-':>6} {'-':>5} {'-':>9} {'-':>9} {'-':<14} PROBLEM"
    info = check.info
    return (f"{name:<28} {info.num_slices:>6} {info.num_coils:>5} {_size(info.kspace_shape):>9} "
            f"{_size(info.recon_shape):>9} {check.acquisition or '-':<14} ok")


def folder_lines(check: FolderCheck) -> list[str]:
    """The table of one folder: a row per file, a totals line, then its problems (one line each)."""
    lines = [f"folder {check.folder}"]
    if check.files:
        lines += ["  " + _COLUMNS, *("  " + _row(f) for f in check.files)]
    lines.append(f"  {len(check.volumes)} usable volumes of {len(check.files)} files, {check.slices} slices, "
                 f"coils {', '.join(map(str, check.coils)) or '-'}, k-space {_sizes(check.kspace_sizes)}, "
                 f"recon {_sizes(check.recon_sizes)}, acquisitions {', '.join(check.acquisitions) or '-'}")
    problems = check.problems
    lines.append(f"  {len(problems)} problem{'s' if len(problems) != 1 else ''}" + (":" if problems else ""))
    lines += [f"    {problem}" for problem in problems]
    return lines


def check_report(checks: list[FolderCheck]) -> str:
    """Every folder's table, and a last line saying whether all of them are usable."""
    lines: list[str] = []
    for check in checks:
        lines += [*folder_lines(check), ""]
    bad = [c for c in checks if not c.ok]
    if bad:
        total = sum(len(c.problems) for c in bad)
        lines.append(f"fedforget check: {total} problem{'s' if total != 1 else ''} in {len(bad)} of "
                     f"{len(checks)} folder{'s' if len(checks) != 1 else ''}")
    else:
        lines.append(f"fedforget check: all {len(checks)} folder{'s' if len(checks) != 1 else ''} usable")
    return "\n".join(lines)
