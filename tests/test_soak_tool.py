"""`tools/soak.py`: sampling, figures and exit statuses, on a stand-in for the rehearsal.

A real rehearsal takes minutes here (server start, calibration, the final report), so the
tool's `soak` runs a small script instead that prints the rehearsal's progress lines and
starts a child carrying the Tiled server's command-line marker. The 24 h soak itself is
``make soak-24h``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import psutil
import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "soak.py"

#: Prints 12 progress lines while a child with the server's marker holds a file open.
FAKE_REHEARSAL = """
import subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-c", "import sys, time; f = open(sys.executable, 'rb'); time.sleep(30)",
     "{marker}"]
)
print("opmap rehearsal in somewhere (seed 0)")
for n in range(1, 13):
    time.sleep(0.15)
    print(f"t = 0:{{n:02d}}:00  step: charge   U = 4.300 V  map {{n}}/?  line 8/8")
print("2026-12-01 02:36:39,651 WARNING opmap.callbacks.tiled_writer: a retry")
print("rehearsal finished in 0.1 min wall time")
child.terminate()
child.wait()
sys.exit({status})
"""


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("opmap_soak_tool", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _run(tool: ModuleType, tmp_path: Path, status: int) -> tuple[int, dict]:
    script = tmp_path / "fake_rehearsal.py"
    script.write_text(
        textwrap.dedent(FAKE_REHEARSAL.format(marker=tool.SERVER_MARKER, status=status))
    )
    out = tmp_path / "soak.json"
    args = tool.parse_args(["--out", str(out), "--sample-s", "0.05", "--data-dir", str(tmp_path)])
    code = tool.soak([sys.executable, str(script)], tmp_path, args)
    return code, json.loads(out.read_text())


def test_soak_samples_both_processes_and_writes_the_figures(tool, tmp_path) -> None:
    code, report = _run(tool, tmp_path, status=0)
    assert code in (tool.EXIT_PASS, tool.EXIT_CRITERION)
    assert report["returncode"] == 0 and not report["interrupted"]
    assert report["maps"] == 12 and report["experiment_time_s"] == 12 * 60
    assert report["rehearsal_finished"]
    assert report["rehearsal_log_records"] == {"WARNING": 1, "ERROR": 0}
    assert report["warmup_map"] == 6  # min(max(10, 2), 12 // 2)
    names = {name for sample in report["samples"] for name in sample["processes"]}
    assert names == {"rehearsal", "server"}
    for name in ("rehearsal", "server"):
        figures = report["processes"][name]
        for key in ("rss_warmup_mb", "rss_end_mb", "rss_growth_pct", "fds_min", "fds_max"):
            assert key in figures, key
        assert figures["rss_warmup_mb"] > 0 and figures["fds_min"] > 0
    criteria = report["criteria"]
    assert {"rehearsal_rss_ok", "server_fds_ok", "passed"} <= set(criteria)
    assert (code == tool.EXIT_PASS) == criteria["passed"]
    assert "map 12/?" in Path(report["log"]).read_text()


def test_a_failed_rehearsal_exits_2_with_the_figures_written(tool, tmp_path, capsys) -> None:
    code, report = _run(tool, tmp_path, status=1)
    assert code == tool.EXIT_REHEARSAL
    assert report["returncode"] == 1 and report["maps"] == 12
    assert "rehearsal finished in" in capsys.readouterr().out  # the log's tail is shown


def test_the_rehearsal_command_gives_the_soak_options(tool, tmp_path) -> None:
    args = tool.parse_args(["--maps", "6", "--time-scale", "0.01", "--interval-s", "30"])
    command = tool.rehearse_command(args, tmp_path)
    assert command[:4] == [sys.executable, "-m", "opmap.cli", "rehearse"]
    text = " ".join(command[4:])
    assert "--map-shape 8 5" in text and "--time-scale 0.01" in text
    assert "--map-interval-s 30.0" in text and "--max-maps 6" in text and "--seed 0" in text
    default = tool.rehearse_command(tool.parse_args([]), tmp_path)
    assert "--max-maps" not in default  # the whole protocol: >= 24 h of experiment time
    assert "--no-live-analysis" not in default
    bare = tool.parse_args(["--no-live-analysis"])
    assert "--no-live-analysis" in tool.rehearse_command(bare, tmp_path)


def test_the_summary_measures_growth_from_the_warm_up_to_the_last_map(tool) -> None:
    def sample(maps: int, rss: float, fds: int, finished: bool = False) -> object:
        reading = tool.ProcessSample(pid=1, rss_mb=rss, fds=fds, threads=3)
        return tool.Sample(float(maps), maps, finished, {"rehearsal": reading})

    samples = [sample(n, 100.0 + n, 10) for n in range(21)]  # 20 maps, warm-up to map 10
    samples += [sample(20, 200.0, 20), sample(20, 300.0, 10, finished=True)]
    summary = tool.summarize(samples, 20)
    figures = summary["processes"]["rehearsal"]
    assert summary["warmup_map"] == 10
    assert figures["rss_warmup_mb"] == 110.0 and figures["rss_end_mb"] == 120.0
    assert figures["rss_growth_pct"] == pytest.approx(100 * (120 / 110 - 1), abs=0.01)
    assert figures["rss_final_mb"] == 200.0  # before the summary; the report is not counted
    assert figures["fds_max"] - figures["fds_min"] == 10
    criteria = summary["criteria"]
    assert not criteria["rehearsal_rss_ok"] and not criteria["rehearsal_fds_ok"]
    assert not criteria["server_rss_ok"] and not criteria["passed"]  # no server sample


def test_a_server_lost_during_the_experiment_fails_the_soak(tool) -> None:
    def sample(maps: int, server: bool) -> object:
        reading = tool.ProcessSample(pid=2, rss_mb=100.0, fds=10, threads=3)
        processes = {"rehearsal": reading, "server": reading} if server else {"rehearsal": reading}
        return tool.Sample(float(maps), maps, False, processes)

    samples = [sample(n, server=n < 15) for n in range(21)]
    summary = tool.summarize(samples, 20)
    assert summary["server_lost"] == {"map": 15, "wall_s": 15.0}
    assert summary["criteria"]["server_rss_ok"]  # its figures stop where it was lost ...
    assert not summary["criteria"]["server_alive_ok"] and not summary["criteria"]["passed"]


def _fd_samples(tool, fds_per_map: list[int]) -> list:
    reading = [tool.ProcessSample(pid=1, rss_mb=100.0, fds=f, threads=3) for f in fds_per_map]
    return [
        tool.Sample(float(n), n, False, {"rehearsal": r, "server": r})
        for n, r in enumerate(reading)
    ]


def test_fds_that_scatter_while_maps_are_taken_and_settle_after_count_as_flat(tool) -> None:
    # the 24 h soak's pattern: 12-17 while acquiring (files, connections), 12 once it ends
    scatter = [14, 16, 13, 17, 15, 14, 16, 12, 17, 15] * 6 + [12] * 40
    summary = tool.summarize(_fd_samples(tool, scatter), len(scatter) - 1)
    figures = summary["processes"]["rehearsal"]
    assert figures["fds_max"] - figures["fds_min"] == 5  # a spread of 5 ...
    assert summary["criteria"]["rehearsal_fds_ok"]  # ... but no climb


def test_a_slow_fd_leak_fails_the_soak_even_within_the_old_spread(tool) -> None:
    leak = [12 + n // 25 for n in range(100)]  # one fd every 25 maps: 12 -> 15
    summary = tool.summarize(_fd_samples(tool, leak), len(leak) - 1)
    assert summary["processes"]["rehearsal"]["fds_max"] - 12 <= 4
    assert not summary["criteria"]["rehearsal_fds_ok"]
    assert not summary["criteria"]["passed"]
    spike = [12] * 60 + [30] + [12] * 39  # one late excursion beyond the slack
    assert not tool.summarize(_fd_samples(tool, spike), 99)["criteria"]["rehearsal_fds_ok"]


def test_each_sample_splits_the_rss_and_notes_the_table_store_on_disk(tool, tmp_path) -> None:
    own = tool.read_process(psutil.Process())
    assert own is not None and own.rss_anon_mb is not None and own.rss_file_mb is not None
    # anonymous + file-backed (+ shared) memory make up the resident set
    assert 0 < own.rss_anon_mb < own.rss_mb and own.rss_anon_mb + own.rss_file_mb <= own.rss_mb
    store = tmp_path / "tables.duckdb"
    assert tool.table_store_sizes(store) == {} and tool.table_store_sizes(None) == {}
    store.write_bytes(b"x" * 2**20)
    store.with_name("tables.duckdb.wal").write_bytes(b"x" * 2**19)
    assert tool.table_store_sizes(store) == {"db": 1.0, "wal": 0.5}


def test_the_summary_gives_anonymous_rss_and_the_wal_over_the_steady_window(tool) -> None:
    def sample(maps: int, anon: float, wal: float) -> object:
        reading = tool.ProcessSample(1, 100.0 + anon, 10, 3, rss_anon_mb=anon, rss_file_mb=50.0)
        store = {"db": 0.01, "wal": wal}
        return tool.Sample(float(maps), maps, False, {"server": reading}, store)

    samples = [sample(n, 200.0 + n, 0.1 * n) for n in range(21)]
    samples.append(sample(20, 260.0, 0.0))  # the tail: a checkpoint empties the WAL
    summary = tool.summarize(samples, 20)
    figures = summary["processes"]["server"]
    assert figures["rss_anon_warmup_mb"] == 210.0 and figures["rss_anon_end_mb"] == 220.0
    assert figures["rss_anon_growth_pct"] == pytest.approx(100 * (220 / 210 - 1), abs=0.01)
    assert figures["rss_anon_max_mb"] == 260.0
    store = summary["table_store"]
    assert store["wal_warmup_mb"] == pytest.approx(1.0)
    assert store["wal_end_mb"] == pytest.approx(2.0)
    assert store["wal_max_mb"] == pytest.approx(2.0)


def test_duckdbs_account_of_the_table_store_is_read_after_the_run(tool, tmp_path) -> None:
    import duckdb

    path = tmp_path / "tables.duckdb"
    assert tool.duckdb_view(path) is None  # no file: nothing to read
    with duckdb.connect(str(path)) as connection:
        connection.execute("create table t as select range as i from range(5000)")
    view = tool.duckdb_view(path)
    assert view["tables"] == 1 and view["rows_estimated"] == 5000
    assert view["database_size"]["used_blocks"] >= 1
