"""The experiment contract (sweeps/experiment.py): registration checks it, and a new experiment is one class and one
register line: the sweep's flags, workers, study and report pick it up."""

import dataclasses
import math

import pytest

from lorainit import cli
from lorainit.sweeps import experiment, report, summary, worker
from lorainit.sweeps.experiment import Experiment, Section, register
from lorainit.sweeps.store import Store


@dataclasses.dataclass
class QuadConfig:
    center: float = 0.1
    """the learning rate where the loss is lowest"""


class Quad(Experiment):  # the whole experiment: a loss (log10(lr / center))^2, seed 1 a little worse
    name, config = "quad", QuadConfig
    defaults = {"inits": ("init_a", "init_b"), "lrs": (0.01, 0.1, 1.0), "seeds": 2, "batch": 4}

    def metric(self, cfg):
        return "loss", "minimize"

    def run(self, cfg, points, out):
        return [
            (
                math.log10(p["lr"] / cfg.center) ** 2 + 0.01 * p["seed"],
                {"test": 0.0, "diverged_step": None, "reason": None},
            )
            for p in points
        ]


@pytest.fixture
def quad(monkeypatch):
    """Quad registered for one test (the registry as it was afterwards)."""
    experiment.names()  # the built-in ones registered first, into the registry that stays
    monkeypatch.setattr(experiment, "EXPERIMENTS", dict(experiment.EXPERIMENTS))
    return register(Quad())


def test_a_new_experiment_sweeps_and_reports_through_the_registry(quad, tmp_path):
    res = worker.run(worker.SweepConfig(experiment="quad"), QuadConfig(), tmp_path, progress=False)
    assert res["done"] == res["total"] == 2 * 3 * 2  # the defaults: 2 inits x 3 LRs x 2 seeds
    st = Store(f"sqlite:///{tmp_path / 'study.db'}", "sweep")
    st.load()
    summary = report.write(st, tmp_path)
    assert {i: s["selected_lr"] for i, s in summary["groups"][0]["inits"].items()} == {"init_a": 0.1, "init_b": 0.1}
    assert "# Sweep report: quad" in (tmp_path / "report.md").read_text()


def test_its_config_fields_are_the_sweeps_flags(quad, tmp_path, capsys):
    assert (
        cli.main(
            [
                "sweep",
                "--experiment",
                "quad",
                "--center",
                "1.0",
                "--gpus",
                "none",
                "--no-progress",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "12/12 points finished" in capsys.readouterr().out
    st = Store(f"sqlite:///{tmp_path / 'study.db'}", "sweep")
    st.load()
    assert summary.summarize(st.grid.signature(), st.records())["groups"][0]["inits"]["init_a"]["selected_lr"] == 1.0
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--experiment", "quad", "--help"])
    assert "quad experiment: --center CENTER the learning rate where the loss is lowest" in " ".join(
        capsys.readouterr().out.split()
    )


def test_its_note_and_section_go_into_the_report(quad, tmp_path, monkeypatch):
    monkeypatch.setattr(Quad, "note", lambda self, grid: "Quad: the value is a parabola in log LR.", raising=False)
    monkeypatch.setattr(
        Quad,
        "report_section",
        lambda self, grid, records, out: Section("Quad analysis", f"{len(records)} trials", [], {"quad": True}),
        raising=False,
    )
    worker.run(worker.SweepConfig(experiment="quad"), QuadConfig(), tmp_path, progress=False)
    st = Store(f"sqlite:///{tmp_path / 'study.db'}", "sweep")
    st.load()
    assert report.write(st, tmp_path)["quad"] is True
    md = (tmp_path / "report.md").read_text()
    assert "Quad: the value is a parabola in log LR." in md and "## Quad analysis" in md and "12 trials" in md


def test_registration_checks_the_contract(quad):
    class NoRun(Experiment):
        name, config, defaults = "norun", QuadConfig, Quad.defaults

        def metric(self, cfg):
            return "loss", "minimize"

    with pytest.raises(TypeError, match="'norun' must define run"):
        register(NoRun())
    with pytest.raises(TypeError, match="config must be a dataclass"):
        register(type("Bad", (Quad,), {"name": "bad", "config": dict})())
    with pytest.raises(TypeError, match="replaced/from_config name \\['widths'\\], which QuadConfig has not"):
        register(type("Bad", (Quad,), {"name": "bad", "replaced": ("widths",)})())
    with pytest.raises(TypeError, match="defaults must give batch"):
        register(type("Bad", (Quad,), {"name": "bad", "defaults": {"inits": (), "lrs": (), "seeds": 1}})())
    with pytest.raises(TypeError, match="name must be a non-empty identifier"):
        register(type("Bad", (Quad,), {"name": "no name"})())
    with pytest.raises(ValueError, match="'toy' is already registered"):
        register(type("Toy2", (Quad,), {"name": "toy"})())
    with pytest.raises(TypeError, match="is not an Experiment"):
        register(object())


def test_get_names_the_closest_experiment():
    assert experiment.names()[:3] == ["toy", "mf", "finetune"]
    with pytest.raises(ValueError, match="unknown experiment 'finetun'; did you mean 'finetune'\\?"):
        experiment.get("finetun")
    assert (
        experiment.get("toy")
        .note({"config": {"select_on": "train"}})
        .startswith("Toy: 'validation' is the final loss on the train set")
    )


def test_an_experiments_own_command_runs_as_lorainit_name(quad, monkeypatch, capsys):
    import sys
    import types

    module = types.ModuleType("quad_cli")
    module.main = lambda argv: print(f"quad ran with {argv}") or 0
    monkeypatch.setitem(sys.modules, "quad_cli", module)
    monkeypatch.setattr(Quad, "command", "quad_cli:main", raising=False)
    monkeypatch.setattr(Quad, "summary", "a parabola", raising=False)
    assert cli.main(["quad", "--x", "1"]) == 0 and "quad ran with ['--x', '1']" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["quadd"])
    assert "unknown command 'quadd'; choose one of toy, mf, finetune, quad, theory" in capsys.readouterr().err
    with pytest.raises(TypeError, match="command must be 'module:function' and come with a summary line"):
        register(type("Bad", (Quad,), {"name": "bad", "command": "quad_cli.main"})())
