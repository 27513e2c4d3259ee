"""The main job, at a small size: every (data set, method) scored, results written, figure drawn."""

import json

from factrfm.cli import main


def test_demo_writes_every_score_and_the_figure(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path), "--parity-n", "400", "--parity-d", "12",
               "--parity-k", "2", "--n-iter", "2"])
    assert rc == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    rows = summary["rows"]
    assert len(rows) == 5 * 3
    assert {r["method"] for r in rows} == {"FACT-RFM", "NFA-RFM", "kernel ridge"}
    by = {(r["dataset"], r["method"]): r for r in rows}
    assert by[("wine", "FACT-RFM")]["score"] >= 0.9
    assert by[("diabetes", "kernel ridge")]["metric"] == "R^2"
    assert (tmp_path / "parity_metric.png").stat().st_size > 0
    assert "FACT-RFM" in capsys.readouterr().out


def test_cli_rejects_unknown_commands(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["no-such-command"])
    assert "invalid choice" in capsys.readouterr().err
