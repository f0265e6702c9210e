"""The data-efficiency report: one table per dataset, the gain paired by seed, a PNG and one record per
training with the fields a reader needs to trace it (cotpd/bench/efficiency.py)."""
from __future__ import annotations

import json

import pytest

from cotpd.bench import efficiency
from cotpd.bench.args import BenchArgs
from cotpd.bench.report import GridResult, write_side_reports
from cotpd.bench.spec import MODES
from cotpd.errors import CotpdError


def _rec(ds, variant, seed, frac, test, dev=0.5, group=None):
    return {"dataset": ds, "variant": variant, "seed": seed, "fraction": frac, "test_f1": test, "dev_f1": dev,
            "group": group or ("main" if frac == 1.0 else "fraction"), "git_commit": "0123456789abcdef",
            "seconds": 10.0, "n_train": 40, "config_hash": "h", "label": "", "per_type": {}}


def test_report_pairs_by_seed_and_writes_table_plot_and_records(tmp_path):
    recs = [_rec("twitter2015", "baseline", 13, 0.1, 0.50), _rec("twitter2015", "cotpd", 13, 0.1, 0.53),
            _rec("twitter2015", "baseline", 14, 0.1, 0.60), _rec("twitter2015", "cotpd", 14, 0.1, 0.61),
            _rec("twitter2015", "cotpd", 15, 0.1, 0.90),            # no baseline at s15: not paired
            _rec("twitter2015", "knowledge", 13, 0.1, 0.52),
            _rec("twitter2015", "baseline", 13, 1.0, 0.70), _rec("twitter2015", "cotpd", 13, 1.0, 0.71),
            _rec("mnre", "baseline", 13, 0.25, 0.30), _rec("mnre", "cotpd", 13, 0.25, 0.28),
            _rec("mnre", "cotpd", 13, 1.0, 0.6, group="ablation")]  # not a point of the curve
    readme = efficiency.write(recs, tmp_path, "cotpd bench --full --groups fraction")
    text = readme.read_text()
    row10 = next(line for line in text.splitlines() if line.startswith("| 10% |"))
    # baseline mean of 50 and 60; paired gain over seeds 13 and 14 only: (+3 + +1) / 2 = +2.00
    assert "55.00 ± 7.07 (2)" in row10 and "+2.00 ± 1.41 (2 seeds)" in row10 and "52.00 (1)" in row10
    row25 = next(line for line in text.splitlines() if line.startswith("| 25% |"))
    assert "-2.00 (1 seed)" in row25  # a loss is reported as such
    assert text.index("### mnre") < text.index("### twitter2015")
    assert "cotpd bench --full --groups fraction" in text and "0123456" in text
    assert (tmp_path / "f1_vs_data_fraction.png").stat().st_size > 1000
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert len(runs) == 10  # the ablation record is left out
    assert {"dataset", "variant", "seed", "fraction", "dev_f1", "test_f1", "git_commit"} <= set(runs[0])


def test_paired_gain_ignores_unpaired_seeds():
    recs = [_rec("d", "cotpd", 1, 0.1, 0.6), _rec("d", "baseline", 2, 0.1, 0.5)]
    assert efficiency.paired_gain(recs) == []
    recs.append(_rec("d", "baseline", 1, 0.1, 0.4))
    assert efficiency.paired_gain(recs) == [pytest.approx(0.2)]


def _grid(root, out, recs, **args):
    mode = "full" if out == "results/full" else "quick"
    return GridResult(root, root / out, BenchArgs(mode=mode, **args), MODES[mode], ["twitter2015"], 1, 13,
                      {"twitter2015": "ner"}, "abc1234", records=recs)


def test_side_reports_name_their_out_and_another_out_does_not_overwrite_them(tmp_path):
    """`--quick` (--out results) once overwrote the full grid's data-efficiency report: a side report now
    names its --out, another --out is refused before either side report is written, and the files stay."""
    recs = [_rec("twitter2015", "baseline", 13, 0.1, 0.50), _rec("twitter2015", "cotpd", 13, 0.1, 0.53),
            _rec("twitter2015", "cotpd", 13, 1.0, 0.70)]
    lever = dict(_rec("twitter2015", "cotpd", 13, 1.0, 0.72), group="levers", label="T1")
    full = {"efficiency_out": tmp_path / "results/efficiency"}  # where stop 18 put the full grid's report
    write_side_reports(_grid(tmp_path, "results/full", recs, **full), "cotpd bench --full --out results/full")
    saved = json.loads((tmp_path / "results/efficiency/results.json").read_text())
    assert saved["bench_out"] == "results/full" and len(saved["runs"]) == 3
    before = (tmp_path / "results/efficiency/README.md").read_text()
    with pytest.raises(CotpdError, match=r"results/efficiency holds the report of `cotpd bench --out results/full`, "
                                         r"not of --out results: .*--efficiency-out"):
        write_side_reports(_grid(tmp_path, "results", recs + [lever]), "cotpd bench --quick")  # its default folders
    assert (tmp_path / "results/efficiency/README.md").read_text() == before
    assert not (tmp_path / "results/ablations").exists()  # both checked before either was written
    # the same --out rewrites its own report; another folder takes the quick grid's
    write_side_reports(_grid(tmp_path, "results/full", recs[:2], **full), "cotpd bench --full --out results/full")
    assert len(json.loads((tmp_path / "results/efficiency/results.json").read_text())["runs"]) == 2
    write_side_reports(_grid(tmp_path, "results", recs + [lever], efficiency_out=tmp_path / "results/eff-quick"),
                       "cotpd bench --quick")
    assert json.loads((tmp_path / "results/ablations/results.json").read_text())["bench_out"] == "results"
    quick = tmp_path / "results/eff-quick"
    assert json.loads((quick / "results.json").read_text())["bench_out"] == "results"
    # a reduced mode heads its side report as it heads its main report; the full grid's has no such line
    text = (quick / "README.md").read_text()
    assert "QUICK MODE — reduced grid" in text and "Schedule: params.yaml's, changed as above." in text
    assert "MODE —" not in before and "Schedule: params.yaml's. " in before
