"""Model helpers: the seeded task head, switching dropout off, which module is the head; the GGUF model converted
once into the cache, also when several processes ask for it at once."""

import fcntl
import threading
import time

import torch

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
