"""Task splits and text cleaning (lorainit.data): fixed, disjoint splits; the commonest MediaWiki markup removed.
(Loading every task and user .jsonl files: tests/experiments/test_finetune.py and the fine-tune tests.)"""

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
