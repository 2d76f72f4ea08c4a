"""The data layer's batches (lorainit.batches): a function of (seed, step) only; LM blocks; choice prompts."""

import dataclasses
import json

import torch

from lorainit import batches, data
from lorainit.experiments import finetune


def test_batches_depend_on_seed_and_step_only(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"text": f"t{i}", "label": i % 2}) + "\n" for i in range(50)))
    task = data.load(str(f))
    cfg = finetune.FinetuneConfig(task=str(f), batch_size=4, grad_accum=2)
    a, b = batches.Batches(task, None, cfg, "cpu"), batches.Batches(task, None, cfg, "cpu")
    assert [a.indices(s, m) for s in range(20) for m in range(2)] == [
        b.indices(s, m) for s in range(20) for m in range(2)
    ]
    other = batches.Batches(task, None, dataclasses.replace(cfg, seed=1), "cpu")
    assert [a.indices(s, 0) for s in range(5)] != [other.indices(s, 0) for s in range(5)]
    seen = [i for s in range(5) for m in range(2) for i in a.indices(s, m)]  # 40 draws: the first epoch has no repeats
    assert len(set(seen)) == len(seen) == 40


def test_blocks_join_texts_with_eos_and_drop_the_remainder():
    class Tok:
        eos_token_id = 0

        def __call__(self, texts, add_special_tokens=False):  # a list of texts, as blocks passes them
            return {"input_ids": [[int(w) for w in t.split()] for t in texts]}

    out = batches.blocks(Tok(), [{"text": "1 2 3"}, {"text": "4 5"}, {"text": "6"}], 3)
    assert [b.tolist() for b in out] == [[1, 2, 3], [0, 4, 5], [0, 6, 0]]
    assert batches.blocks(Tok(), [{"text": "1"}], 3) == []
    assert batches.blocks(Tok(), [], 3) == []


def test_blocks_tokenize_the_texts_together_as_each_alone():
    """One tokenizer call for all texts (parallel in a fast tokenizer) gives each text's own tokens."""
    from lorainit import data, models

    _, tok, _, _ = models.load("smollm2-135m")
    texts = data.load("wiki").splits["train"][:12]
    alone = [i for e in texts for i in [*tok(e["text"], add_special_tokens=False)["input_ids"], tok.eos_token_id]]
    n = len(alone) // 64
    assert n > 10
    assert torch.equal(torch.stack(batches.blocks(tok, texts, 64)), torch.tensor(alone[: n * 64]).view(n, 64))


def test_choice_text_splits_prompt_and_answer():
    e = {"question": "1 + 1?", "options": ["1", "2"], "answer": 1}
    assert batches.choice_text(e) == ("Question: 1 + 1?\nAnswer:", " 2")
    assert batches.choice_text(e, 0)[1] == " 1"
