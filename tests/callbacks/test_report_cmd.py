"""``opmap report`` on a NeXus products file: files, printed table, no overwriting."""

from __future__ import annotations

import pytest

from opmap.analysis.nexus import write_products
from opmap.cli import build_parser

from ._report_products import synthetic_products


def run(*argv: object) -> int:
    args = build_parser().parse_args(["report", *map(str, argv)])
    return args.func(args)


@pytest.fixture(scope="module")
def nexus(tmp_path_factory):
    return write_products(tmp_path_factory.mktemp("nxs") / "cell-7.nxs", synthetic_products())


def test_report_from_nexus_prints_files_and_table_and_never_overwrites(
    nexus, tmp_path, monkeypatch, capsys, caplog
):
    monkeypatch.chdir(tmp_path)
    assert run("cell-7", "--from-nexus", nexus, "--formats", "png", "--dpi", "40") == 0
    out = capsys.readouterr().out
    report = tmp_path / "cell-7_report"
    assert "cell-7_report/fig2_charge.png" in out.splitlines()
    assert "| c per pixel RMS perp |" in out and "| front speed |" in out
    assert {p.name for p in report.iterdir()} == {
        "fig2_charge.png", "fig3_discharge.png", "fig4_anode.png", "fig_truth.png",
        "truth_table.csv", "truth_table.md", "report.html",
    }  # fmt: skip
    # The default folder is versioned: a second report goes to cell-7_report.v2.
    assert run("cell-7", "--from-nexus", nexus, "--formats", "png", "--dpi", "40") == 0
    assert (tmp_path / "cell-7_report.v2" / "fig4_anode.png").is_file()
    capsys.readouterr()
    # An explicit existing --out is refused, untouched, unless --overwrite.
    before = (report / "fig2_charge.png").stat().st_mtime_ns
    assert run("cell-7", "--from-nexus", nexus, "--out", report, "--formats", "pdf") == 2
    assert "exists; pass --overwrite" in caplog.text
    assert (report / "fig2_charge.png").stat().st_mtime_ns == before
    assert not (report / "fig2_charge.pdf").exists()
    assert run("cell-7", "--from-nexus", nexus, "--out", report, "--overwrite",
               "--formats", "pdf") == 0  # fmt: skip
    assert (report / "fig2_charge.pdf").is_file()


def test_bad_sources_exit_with_status_2(tmp_path, caplog):
    assert run("cell-7", "--from-nexus", tmp_path / "missing.nxs", "--out", tmp_path / "r") == 2
    assert not (tmp_path / "r").exists()
    assert run("cell-7", "--from-nexus", tmp_path / "x.nxs", "--version", "v1") == 2
    assert "--version selects a Tiled version" in caplog.text


def test_source_is_required():
    with pytest.raises(SystemExit):
        run("cell-7")
