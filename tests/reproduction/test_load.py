import gzip
import json

import pytest

from lorainit import io
from lorainit.reproduction import load

from .conftest import mf_results, sweep_folder, toy_results


def test_finds_every_kind_of_study(tmp_path):
    for d in (1, 0):
        io.write_json(tmp_path / f"toy-d{d}" / "results.json", {**toy_results(d, -0.5, -1.0), "widths": [{"runs": []}]})
    (tmp_path / "mf-paper-p4").mkdir()
    (tmp_path / "mf-paper-p4" / "results.json.gz").write_bytes(
        gzip.compress(json.dumps(mf_results(5.0, 0, 5.0, 4)).encode())
    )
    sweep_folder(tmp_path / "tiny-wiki", {"init_a": lambda lr, s: (1.0, 1.0)})
    (tmp_path / "figures").mkdir()
    st = load.load(tmp_path)
    assert [r["config"]["data_seed"] for r in st.toy] == [0, 1]
    assert list(st.mf) == ["paper"] and list(st.mf["paper"]) == [4]
    assert [s.name for s in st.sweeps] == ["tiny-wiki"] and len(st.sweeps[0].points) == 9


def test_slim_drops_only_the_per_run_data(tmp_path):
    p = tmp_path / "results.json"
    io.write_json(p, {**toy_results(0, -0.5, -1.0), "widths": [{"runs": [1, 2]}]})
    load.slim(p, "toy")
    assert "widths" not in io.read_json(p) and "analysis" in io.read_json(p)


def test_a_missing_folder_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="Regenerate"):
        load.load(tmp_path / "nope")
