"""Model helpers: the seeded task head, switching dropout off, which module is the head; the GGUF model converted
once into the cache, also when several processes ask for it at once."""

import fcntl
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_llama

from lorainit import assets, models


def test_one_process_converts_at_a_time_and_the_others_leave_its_folder_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAINIT_CACHE", str(tmp_path))
    folder = tmp_path / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # renamed into place by a converter that has not yet recorded it
    converted, reached = [], threading.Event()

    def convert(spec, dest):  # (the real one: tests that load smollm2-135m)
        converted.append(dest)
        dest.mkdir()
        (dest / "config.json").write_text('{"converted": true}')
        assets.record_manifest(dest)

    monkeypatch.setattr(models, "_convert", convert)
    with open(tmp_path / "models" / ".smollm2-135m.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the converter's lock
        real = fcntl.flock
        monkeypatch.setattr(fcntl, "flock", lambda f, op: (reached.set(), real(f, op))[1])
        other = threading.Thread(target=models.resolve, args=("smollm2-135m",))
        other.start()
        assert reached.wait(30)
        time.sleep(0.5)
        assert other.is_alive() and (folder / "config.json").read_text() == "{}"  # waits; the folder is untouched
    other.join(30)
    assert not other.is_alive()
    assert converted == [folder]  # then, finding it unrecorded, converts it again
    assert assets.verified(folder)
    assert models.resolve("smollm2-135m")[0] == str(folder) and converted == [folder]  # and uses it from now on


def test_an_incomplete_converted_folder_is_converted_again(tmp_path, monkeypatch):
    """A folder recorded without its weights (what a torchrun rank other than 0 left before ``_save``: transformers'
    save_pretrained wrote only the tokenizer there) is replaced, not taken, and not renamed onto (which failed)."""
    monkeypatch.setenv("LORAINIT_CACHE", str(tmp_path))
    folder = tmp_path / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    (folder / "tokenizer.json").write_text("{}")
    assets.record_manifest(folder)
    assert assets.verified(folder)
    converted = []

    def convert(spec, dest):
        converted.append(dest)
        dest.mkdir()  # (fails where the old folder is still there)
        (dest / "config.json").write_text("{}")
        assets.record_manifest(dest)

    monkeypatch.setattr(models, "_convert", convert)
    assert models.resolve("smollm2-135m")[0] == str(folder) and converted == [folder]
    assert (folder / "config.json").exists() and not (folder / "tokenizer.json").exists()


def test_a_folder_converted_with_the_gguf_quantization_mark_is_converted_again(tmp_path, monkeypatch):
    """Folders converted before 2026-11-27 kept the GGUF's quantization_config, so transformers loaded their plain
    weights through its GGUF quantizer; such a folder is replaced, not taken."""
    monkeypatch.setenv("LORAINIT_CACHE", str(tmp_path))
    folder = tmp_path / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"quantization_config": {"quant_method": "gguf"}}')
    assets.record_manifest(folder)
    converted = []

    def convert(spec, dest):
        converted.append(dest)
        dest.mkdir()
        (dest / "config.json").write_text("{}")
        assets.record_manifest(dest)

    monkeypatch.setattr(models, "_convert", convert)
    assert models.resolve("smollm2-135m")[0] == str(folder) and converted == [folder]
    assert models.resolve("smollm2-135m")[0] == str(folder) and converted == [folder]  # taken from now on


@pytest.mark.slow  # (a real model: make test-fast leaves it out)
def test_the_converted_smollm2_loads_as_a_plain_unquantized_model():
    from lorainit import full

    model, _, _, _ = models.load("smollm2-135m", dtype=torch.bfloat16)
    assert getattr(model, "hf_quantizer", None) is None and full.quantization(model) is None
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_save_writes_what_save_pretrained_writes_byte_for_byte(tmp_path):
    model = tiny_llama(tie_word_embeddings=True).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "reference")
    (tmp_path / "ours").mkdir()
    models._save(model, tmp_path / "ours")
    names = sorted(p.name for p in (tmp_path / "reference").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "ours").iterdir())
    assert "model.safetensors" in names and "config.json" in names
    for n in names:
        assert (tmp_path / "ours" / n).read_bytes() == (tmp_path / "reference" / n).read_bytes(), n


def _save_as_rank(rank, init_file, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    if rank == 1:
        model = tiny_llama(tie_word_embeddings=True)
        for name, save in (("pretrained", model.save_pretrained), ("ours", lambda f: models._save(model, f))):
            (Path(out) / name).mkdir()
            save(Path(out) / name)
    dist.barrier()
    dist.destroy_process_group()


def test_save_writes_the_model_on_any_torchrun_rank(tmp_path):
    """Under a process group, transformers' save_pretrained writes nothing on rank 1 (why ``_save`` exists: the first
    torchrun process to convert the GGUF may be any rank); ``_save`` writes the model there."""
    torch.multiprocessing.spawn(_save_as_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    assert not (tmp_path / "pretrained" / "model.safetensors").exists()  # the premise
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "ours").iterdir()}


def test_seeded_head_is_a_function_of_the_seed_and_transformers_draw(tiny_bert):
    model = tiny_bert()
    assert models.head_name(model) == "classifier"
    a, b, c = (models.seeded_head(model, "classifier", s) for s in (0, 0, 1))
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)
    assert torch.count_nonzero(a.bias) == 0 and a is not model.classifier
    other = models.seeded_head(tiny_bert(seed=5), "classifier", 0)  # another model's random head: the same draw
    assert torch.equal(other.weight, a.weight)
    w = torch.cat([models.seeded_head(model, "classifier", s).weight.flatten() for s in range(200)])
    assert abs(w.std().item() - model.config.initializer_range) < 0.05 * model.config.initializer_range


def test_without_dropout(tiny_bert, tiny_llama):
    import transformers

    cfg = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=48
    )
    bert = transformers.BertForSequenceClassification(cfg).train()
    ids = torch.randint(0, 64, (2, 8))
    assert not torch.equal(bert(input_ids=ids).logits, bert(input_ids=ids).logits)  # dropout on: two draws differ
    models.without_dropout(bert)
    assert torch.equal(bert(input_ids=ids).logits, bert(input_ids=ids).logits)
    llama = tiny_llama()
    llama.model.layers[0].self_attn.attention_dropout = 0.5
    models.without_dropout(llama)
    assert llama.model.layers[0].self_attn.attention_dropout == 0.0
    assert models.head_name(llama) is None
