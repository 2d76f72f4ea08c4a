"""Model helpers: the seeded task head, switching dropout off, which module is the head."""

import torch

from lorainit import models


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
