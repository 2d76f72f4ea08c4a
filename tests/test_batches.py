"""The data layer's batches (lorainit.batches): a function of (seed, step) only; LM blocks; choice prompts."""

import dataclasses
import json

import pytest
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


def _tokenizer(name: str):
    import transformers

    from lorainit import models

    tok = transformers.AutoTokenizer.from_pretrained(models.resolve(name)[0])
    if tok.pad_token is None:  # as models.load sets it for a causal LM
        tok.pad_token = tok.eos_token
    return tok


def test_encodings_collate_as_collate_does(monkeypatch):
    """Kept tokenization gives the batches collate gives (real tokenizers: MiniLM on text pairs (nli) and single
    texts (sentiment), SmolLM2 on choice texts, whose labels mask the padding), with repeats in and across batches;
    each example is tokenized once, the step's new ones in one call."""
    for name, task_name in (("minilm-l6", "nli"), ("minilm-l6", "sentiment"), ("smollm2-135m", "mathqa")):
        task, tok = data.load(task_name), _tokenizer(name)
        items = task.splits["train"][:40]
        enc, masked = batches.Encodings(task, tok, items, 512), False
        calls = []
        inner = batches._encode
        monkeypatch.setattr(batches, "_encode", lambda *a, **k: calls.append(len(a[2])) or inner(*a, **k))
        for idx in ([0, 5, 7, 7, 3], [5, 9, 0, 1], list(range(40)), [39, 2]):
            want = batches.collate(task, tok, [items[i] for i in idx], 512, "cpu")
            got = enc.collate(idx, "cpu")
            assert got.keys() == want.keys()
            for k in want:
                assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), (task_name, idx, k)
            masked = masked or bool((want["attention_mask"] == 0).any())
        assert calls[1::2] == [4, 2, 34], task_name  # (even entries: collate's own calls) new examples only
        monkeypatch.undo()
        assert masked, task_name  # some batch had padding (for choice: masked in the labels too)


def test_batches_with_encodings_equal_batches_without():
    task, tok = data.load("nli"), _tokenizer("minilm-l6")
    cfg = finetune.FinetuneConfig(task="nli", batch_size=6, seq_len=32)
    items = task.splits["train"][:50]
    plain = batches.Batches(task, tok, cfg, "cpu", items=items)
    kept = batches.Batches(task, tok, cfg, "cpu", items=items, encodings=batches.Encodings(task, tok, items, 32))
    for s in range(12):  # past the first epoch: repeats
        a, b = plain(s), kept(s)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert all(torch.equal(x, y) for x, y in zip(plain.full(s).values(), kept.full(s).values()))


def test_to_device_keeps_values():
    b = {"input_ids": torch.arange(6).view(2, 3), "labels": torch.tensor([1, 0])}
    got = batches.to_device(b, "cpu")
    assert all(torch.equal(got[k], b[k]) for k in b)


def test_uploader_on_cpu_keeps_values():
    b = {"input_ids": torch.arange(6).view(2, 3), "labels": torch.tensor([1, 0])}
    got = batches.Uploader("cpu")(b)
    assert all(torch.equal(got[k], b[k]) for k in b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned buffers and events need a GPU")
def test_uploader_keeps_values_through_its_reused_buffers():
    up = batches.Uploader("cuda", slots=2)
    sent = [
        {"input_ids": torch.randint(0, 9, (2, n)), "mask": torch.ones(2, n, dtype=torch.long)} for n in (5, 3, 7, 4)
    ]
    got = [up(b) for b in sent]  # a padded batch grows (7 after 3): its set's buffer is replaced
    for b, g in zip(sent, got):
        assert all(torch.equal(g[k].cpu(), b[k]) for k in b)
    assert len(up._buffers) == 2 and all(set(bufs) == {"input_ids", "mask"} for bufs in up._buffers)


@pytest.mark.parametrize("dtype", [torch.long, torch.bool, torch.float32, torch.bfloat16])
def test_stage_copies_every_dtype_and_layout(dtype):
    """batches.stage: the values of src in dst (numpy's one-thread copy; bfloat16, which numpy lacks, by torch's)."""
    src = (torch.arange(24).view(4, 6) % 5).to(dtype).t()  # (6, 4), a transposed view
    dst = torch.empty(6, 4, dtype=dtype)
    batches.stage(dst, src)
    assert torch.equal(dst, src)
