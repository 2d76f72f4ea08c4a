"""``lorainit finetune`` (experiments/finetune_cli.py), run as a user would: bad input is one line and touches nothing
(the fine-tune itself: test_finetune_run.py)."""

from helpers import lorainit


def test_finetune_bad_data_file_and_nothing_overwritten(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n')
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = lorainit("finetune", "--task", str(bad), "--out", str(out))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "bad.jsonl:2: not valid JSON" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
