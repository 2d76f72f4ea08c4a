"""The run folder's layout (runfolder.py): the resume step from the checkpoint, the log cut back on resume, the card."""

import json

import torch

from lorainit import checkpoint, io
from lorainit.runfolder import RunFolder


def test_an_empty_folder_starts_at_step_0_with_no_records(tmp_path):
    f = RunFolder(tmp_path / "r")
    assert (
        f.resume_step() == 0
        and f.records() == []
        and f.steps() == []
        and f.card() is None
        and f.checkpoint_state() is None
    )


def test_resume_drops_the_records_the_checkpoint_does_not_cover(tmp_path):
    f = RunFolder(tmp_path)
    log, file, kept = f.open_log(0)
    assert kept == []
    for step in range(6):
        log({"step": step, "loss": 1.0 / (step + 1)})
    log({"step": 4, "val_accuracy": [0.5]})
    file.close()
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW([{"params": list(model.parameters()), "names": ["weight", "bias"]}])
    checkpoint.save_checkpoint(f.checkpoint, model, opt, 4, {"processes": 2})  # the loop's own layout
    assert f.resume_step() == 4 and f.checkpoint_state()["processes"] == 2
    log, file, kept = f.open_log(f.resume_step())
    assert [r["step"] for r in kept] == [0, 1, 2, 3]  # step 4's loss and evaluation dropped
    log({"step": 4, "loss": 0.2})
    file.close()
    assert [r["step"] for r in f.records()] == [0, 1, 2, 3, 4] and f.steps()[-1]["loss"] == 0.2
    assert json.loads(f.log.read_text().splitlines()[0]) == {"step": 0, "loss": 1.0}


def test_the_card_is_read_where_the_run_card_is_written(tmp_path):
    io.write_json(tmp_path / "run_card.json", {"metrics": {"final": 1}})
    assert RunFolder(tmp_path).card() == {"metrics": {"final": 1}}
