"""The device check's CPU path end to end, at its tiny shapes (about a second)."""

from app.measure import kernels_numpy
from app.measure.check import main, run


def test_quick_cpu_check_measures_calibrates_and_reports(capsys, tmp_path):
    out = run("cpu", quick=True)
    printed = capsys.readouterr().out
    assert "== calibration ==" in printed and "per call" in printed
    cal = out["calibration"]
    assert cal["hardware"]["launches"]["layer"] == kernels_numpy.LAUNCHES["layer"]  # counted
    assert set(cal["errors"]) >= {"dense_head", "sparse_head", "full_step", "all"}
    assert out["tokens_match"]["all"]
    assert main(["--device", "cpu", "--quick", "--json", str(tmp_path / "c.json")]) == 0
