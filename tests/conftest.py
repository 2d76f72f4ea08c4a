import os

import helpers
import pytest
import torch

# Processes the tests start (sweep workers side by side, torchrun ranks, runs killed and resumed) take one CPU thread
# each unless a test says otherwise; this process keeps torch's default (read when torch was imported, above). At the
# default, every process sizes its pool to the whole 2-core CI machine: two toy sweep workers side by side took 16.4 s
# (median) where one thread each took 5.4 s, and one worker alone 5.8 s vs 5.6 (bench/results/workers_threads_cpu.json).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def float64():
    """Run a test in float64 so that 'same function' comparisons are not blurred by float32 rounding."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def drawn(monkeypatch):
    """The figures ``plots.save`` is given, in order (they are still written): a figure's lines, bars and texts
    can be read back instead of trusting a PNG's size."""
    from lorainit import plots

    figs = []
    real = plots.save
    monkeypatch.setattr(plots, "save", lambda fig, path: figs.append(fig) or real(fig, path))
    return figs


@pytest.fixture
def tiny_llama():
    """A tiny randomly initialized Llama (vocab 64, hidden 32, 2 layers): ``tiny_llama(seed=0)``."""
    return helpers.tiny_llama


@pytest.fixture
def tiny_bert():
    """A tiny randomly initialized BERT classifier (3 labels, no dropout): ``tiny_bert(seed=0)``."""
    return helpers.tiny_bert


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    """A tiny Llama (tied embeddings, SmolLM2's tokenizer) and a tiny BERT (MiniLM's tokenizer) as model folders."""
    import transformers

    from lorainit import models

    root = tmp_path_factory.mktemp("tiny")
    tok = transformers.AutoTokenizer.from_pretrained(models.resolve("smollm2-135m")[0])
    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            tie_word_embeddings=True,
            eos_token_id=tok.eos_token_id,
        )
    )
    llama.save_pretrained(root / "llama")
    tok.save_pretrained(root / "llama")
    tok = transformers.AutoTokenizer.from_pretrained(models.resolve("minilm-l6")[0])
    bert = transformers.BertModel(
        transformers.BertConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=48,
            max_position_embeddings=64,
        )
    )
    bert.save_pretrained(root / "bert")
    tok.save_pretrained(root / "bert")
    return root
