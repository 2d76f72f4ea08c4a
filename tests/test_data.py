"""Task splits and text cleaning (lorainit.data): fixed, disjoint splits; the commonest MediaWiki markup removed;
a task's metric known without loading it. (Loading every task and user .jsonl files: tests/experiments/
test_finetune.py and the fine-tune tests.)"""

import pytest

from lorainit import data


def test_split_is_a_fixed_disjoint_partition():
    s = data.split(50, 5, 10)
    assert [len(s[k]) for k in ("train", "val", "test")] == [35, 5, 10]
    assert sorted(s["train"] + s["val"] + s["test"]) == list(range(50))
    assert data.split(50, 5, 10) == s and data.split(50, 5, 10, seed=1) != s
    with pytest.raises(ValueError, match="cannot hold out 5 for validation and 10 for test"):
        data.split(15, 5, 10)


def test_clean_wikitext_strips_markup_and_keeps_the_text():
    raw = (
        "== History ==\n'''Paris''' is the [[capital city|capital]] of [[France]].{{citation needed}}"
        "<ref>source</ref> See [https://example.org the site].\n\n\n\n[[Category:Cities]]"
    )
    assert data.clean_wikitext(raw) == "History\nParis is the capital of France. See the site."


def test_metric_of_a_task_is_its_loaded_tasks_without_loading_a_built_in_one(tmp_path, monkeypatch):
    for name in data.TASKS:
        task = data.load(name)
        assert data.KINDS[name] == task.kind and data.metric_of(name) == task.metric
    assert data.KINDS.keys() == data.TASKS.keys()
    lm, labelled = tmp_path / "lm.jsonl", tmp_path / "cls.jsonl"
    lm.write_text("".join(f'{{"text": "t{i}"}}\n' for i in range(6)))
    labelled.write_text("".join(f'{{"text": "t{i}", "label": {i % 2}}}\n' for i in range(6)))
    assert (data.metric_of(str(lm)), data.metric_of(str(labelled))) == ("perplexity", "accuracy")
    monkeypatch.setitem(data.TASKS, "wiki", lambda: pytest.fail("metric_of loaded the task"))
    assert data.metric_of("wiki") == "perplexity"
    with pytest.raises(ValueError, match="unknown task 'wikki'"):
        data.metric_of("wikki")
