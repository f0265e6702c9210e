"""`cotpd bench-llm` end to end on a small load (the real numbers come from the full run)."""
from __future__ import annotations

import json

from cotpd.cli import main


def test_bench_llm_small_run_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench-llm", "--calls", "40", "--concurrency", "8", "--latency", "0.05", "--seq-calls", "3",
               "--replay", "500", "--json", str(out)])
    r = json.loads(out.read_text())
    assert rc == 0 and r["recorded"] == 40 and r["server_calls"] == 40 and r["errors"] == 0
    assert r["replay_n"] == 500 and r["replay_http_calls"] == 0
    assert r["ideal_s"] == 40 * 0.05 / 8 and r["record_wall_s"] >= r["ideal_s"]
    assert r["sequential_extrapolated_s"] > r["record_wall_s"]  # 8-way beats one at a time
    assert "ratio to ideal" in capsys.readouterr().out
