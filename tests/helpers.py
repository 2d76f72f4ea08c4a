"""Tiny models the tests share (importable as ``helpers``: pytest puts tests/ on the path)."""
import torch


def tiny_llama(seed: int = 0, **config):
    """A tiny randomly initialized Llama (vocab 64, hidden 32, 2 layers) in eval mode; ``config`` overrides fields."""
    import transformers

    cfg = transformers.LlamaConfig(**{"vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                                      "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32, **config})
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg).eval()


def tiny_bert(seed: int = 0, num_labels: int = 3):
    """A tiny randomly initialized BERT classifier (no dropout) in eval mode."""
    import transformers

    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                                  max_position_embeddings=32, num_labels=num_labels, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(cfg).eval()
