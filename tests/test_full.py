"""Full fine-tuning's pieces (lorainit.full): which parameters train, what it costs, the refusal when it cannot fit,
the float32 copy that leaves the base untouched, and the saved folder."""

import pytest
import torch
from torch import nn

from lorainit import full


def test_check_accepts_full_and_registered_schemes_and_names_full_in_its_error():
    full.check("full")
    full.check("init_a")
    with pytest.raises(KeyError, match="did you mean 'pissa'.*or 'full'"):
        full.check("pisa")


def test_embeddings_and_a_tied_output_layer_are_frozen_unless_asked(tiny_llama):
    model = tiny_llama()
    model.config.tie_word_embeddings = True
    model.tie_weights()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    names = set(full.trained(model))
    assert not any("embed_tokens" in n or "lm_head" in n for n in names)
    assert {"model.layers.0.self_attn.q_proj.weight", "model.norm.weight"} <= names
    assert set(full.trained(model, embeddings=True)) == {n for n, _ in model.named_parameters()}


def test_encoder_embedding_tables_frozen_its_layer_norm_and_head_trained(tiny_bert):
    names = set(full.trained(tiny_bert()))
    assert not any(
        n.endswith(("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight"))
        for n in names
    )
    assert {"bert.embeddings.LayerNorm.weight", "classifier.weight"} <= names


def test_memory_is_16_bytes_per_trained_and_4_per_frozen_parameter(tiny_llama):
    model = tiny_llama()
    total = sum(p.numel() for p in model.parameters())
    emb = model.model.embed_tokens.weight.numel()
    m = full.memory(model)
    assert (m["trained"], m["frozen"]) == (total - emb, emb)
    assert m["bytes"] == 16 * (total - emb) + 4 * emb
    assert full.memory(model, embeddings=True)["bytes"] == 16 * total


def test_a_device_too_small_is_refused_in_one_line_naming_the_need_and_the_fix(tiny_llama, monkeypatch):
    need = full.memory(tiny_llama())
    monkeypatch.setattr(full, "available_bytes", lambda device: need["bytes"] - 1)
    with pytest.raises(ValueError, match=r"GiB free; fine-tune a LoRA adapter instead \(--init init_a\)") as e:
        full.check_memory(need, torch.device("cpu"), "tiny")
    assert "\n" not in str(e.value) and f"{need['trained']:,} trained parameters x 16 bytes" in str(e.value)
    monkeypatch.setattr(full, "available_bytes", lambda device: need["bytes"])
    full.check_memory(need, torch.device("cpu"), "tiny")


def test_available_bytes_on_cpu_is_a_positive_count():
    assert full.available_bytes(torch.device("cpu")) > 0


def test_prepare_trains_a_float32_copy_and_leaves_the_base_as_it_was(tiny_bert):
    base = tiny_bert().to(torch.bfloat16).requires_grad_(False)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    head = nn.Linear(32, 3)
    copy = full.prepare(base, head="classifier", head_module=head)
    assert copy.training and all(p.dtype == torch.float32 for p in copy.parameters())
    assert copy.classifier.weight.data_ptr() != base.classifier.weight.data_ptr()
    torch.testing.assert_close(copy.classifier.weight, head.weight)
    trainable = {n for n, p in copy.named_parameters() if p.requires_grad}
    assert trainable == set(full.trained(copy))
    with torch.no_grad():
        for p in copy.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert not any(p.requires_grad for p in base.parameters())


def test_prepare_drops_a_compiled_forward_of_the_original(tiny_llama):
    base = tiny_llama()
    for block in base.model.layers:
        block._compiled_call_impl = block._call_impl  # as nn.Module.compile leaves a block: bound to the original
    copy = full.prepare(base)
    assert all(m._compiled_call_impl is None for m in copy.modules())


def test_save_writes_a_folder_that_from_pretrained_reloads_to_the_same_outputs(tiny_llama, tmp_path):
    import transformers

    from lorainit import models

    tok = transformers.AutoTokenizer.from_pretrained(models.resolve("minilm-l6")[0])
    model = full.prepare(tiny_llama())
    info = full.save(model, tok, tmp_path / "model")
    assert info["path"] == "model" and (tmp_path / "model" / "model.safetensors").exists()
    assert (tmp_path / "model" / "tokenizer.json").exists()
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    ids = torch.randint(0, 64, (2, 7))
    torch.testing.assert_close(again(ids).logits, model.eval()(ids).logits, rtol=0, atol=0)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.slow  # (a real model: make test-fast leaves it out)
def test_a_gguf_loaded_model_trains_as_the_plain_float_model_it_is_and_saves_without_the_mark(tmp_path):
    """A model loaded from a GGUF file (SmolLM2's, as a user with that file would) has de-quantized float weights, but
    transformers keeps a GGUF quantizer on it (whose .float() then refuses) and its config. The copy drops both.
    (The package-shipped smollm2-135m has been converted without the mark since 2026-11-27: tests/test_models.py.)"""
    import transformers

    from lorainit import assets, models

    spec = models.MODELS["smollm2-135m"]
    gguf = assets.extract(assets.DISTS[spec.dist], spec.member)
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _, tok, _, _ = models.load("smollm2-135m")
    assert full.quantization(model) == "gguf"
    copy = full.prepare(model)
    assert full.quantization(copy) is None and full.quantization(model) == "gguf"
    ids = torch.randint(0, 1000, (1, 6))
    torch.testing.assert_close(copy.eval()(ids).logits, model(ids).logits)
    full.save(copy, tok, tmp_path / "m")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert full.quantization(again) is None


def test_a_truly_quantized_model_is_refused(tiny_llama):
    model = tiny_llama()
    model.config.quantization_config = {"quant_method": "bitsandbytes"}
    with pytest.raises(ValueError, match=r"quantized \(bitsandbytes\); load it unquantized"):
        full.prepare(model)
