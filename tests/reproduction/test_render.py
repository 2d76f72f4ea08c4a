"""REPRODUCTION.md regenerated end to end by the CLI from tiny real toy and mf studies and a sweep folder."""

import dataclasses

import pytest
from helpers import TINY_TOY as TINY

from lorainit import cli, io
from lorainit.experiments import mf, toy_study
from lorainit.reproduction import claims

from .conftest import sweep_folder
from .test_tasks import curve


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro") / "studies"
    for d in (0, 1):
        toy_study.run_study(dataclasses.replace(TINY, data_seed=d), root / f"toy-d{d}", progress=False)
    for r in (2, 4):
        cfg = mf.MFConfig(seeds=2, steps=60, preheat_rank=r, preheat_steps=20, preheat_sweep=())
        io.write_json(
            root / f"mf-paper-p{r}" / "results.json",
            {"config": io.config_dict(cfg), "provenance": io.provenance(), **mf.run(cfg)},
        )
    sweep_folder(
        root / "tiny-wiki", {"init_a": curve(1e-3, 19.0), "init_b": curve(2e-4, 20.0), "hrp": curve(1e-3, 19.2)}
    )
    return root


def test_every_claim_gets_a_verdict_numbers_and_a_figure(studies, tmp_path, capsys):
    out = tmp_path / "REPRODUCTION.md"
    assert cli.main(["reproduce", "--studies", str(studies), "--out", str(out), "--slim"]) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| [")]
    assert [r.split("]")[0][3:] for r in rows] == list(claims.every_claim())
    assert all(f"## {c}: " in text for c in claims.every_claim())
    for line in text.splitlines():
        if line.startswith("!["):
            assert (out.parent / line.split("](")[1].rstrip(")")).exists(), line
    assert "widths" not in io.read_json(studies / "toy-d0" / "results.json")  # --slim
    assert "H4  holds" in capsys.readouterr().out
    assert cli.main(["reproduce", "--studies", str(studies), "--out", str(out)]) == 0
    assert out.read_text() == text  # slim studies give the same report


def test_a_missing_study_folder_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "R.md"
    with pytest.raises(SystemExit) as e:
        cli.main(["reproduce", "--studies", str(tmp_path / "none"), "--out", str(out)])
    assert e.value.code != 0 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no study folder" in err[0]
