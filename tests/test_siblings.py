"""Sibling layers (lorainit.siblings): which layers share an input, and that computing them together changes
neither the outputs nor the gradients, eager or traced by torch.compile, nor the base once detached."""

import pytest
import torch

from lorainit import merged, multi, siblings, starts

LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BERT = ["query", "key", "value", "dense"]


def test_shared_inputs_finds_q_k_v_and_gate_up_in_a_llama_and_q_k_v_in_a_bert(tiny_llama, tiny_bert):
    model = tiny_llama()
    groups = siblings.shared_inputs(model, multi.targets_of(model, LLAMA))
    assert groups == [
        [f"model.layers.{i}.{s}" for s in names]
        for i in range(2)
        for names in (["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["mlp.gate_proj", "mlp.up_proj"])
    ]
    bert = tiny_bert()
    groups = siblings.shared_inputs(bert, multi.targets_of(bert, BERT))
    assert groups == [
        [f"bert.encoder.layer.{i}.attention.self.{s}" for s in ("query", "key", "value")] for i in range(2)
    ]


def test_a_model_that_takes_no_input_ids_groups_nothing():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    assert siblings.shared_inputs(model, multi.targets_of(model, ["0", "1"])) == []


def _attached(model, group: bool, K=3, rank=2, corrected=(False, True, False), targets=LLAMA):
    """K runs of random factors on every projection, run 1 with a frozen correction (a residual scheme)."""
    g = torch.Generator().manual_seed(1)
    linears = multi.targets_of(model, targets)
    start = [
        {
            starts.PEFT_PREFIX + n: multi.Factors(
                A=torch.randn(rank, m.in_features, generator=g), B=torch.randn(m.out_features, rank, generator=g)
            )
            for n, m in linears.items()
        }
        for _ in range(K)
    ]
    runs = [multi.Run("init_a", 1e-3, seed=k) for k in range(K)]
    return multi.attach(model, runs, start, scaling=0.5, targets=targets, corrected=list(corrected), siblings=group)


def _loss_and_grads(model, layers, ids, labels=None):
    loss = model(input_ids=ids, labels=ids if labels is None else labels).loss
    loss.backward()
    return loss.detach(), {n: (m.lora_A.grad.clone(), m.lora_B.grad.clone()) for n, m in layers.items()}


@pytest.mark.parametrize("compiled", [False, True])
def test_siblings_computed_together_give_the_same_loss_and_gradients(tiny_llama, compiled):
    ids = torch.randint(0, 64, (3 * 2, 7), generator=torch.Generator().manual_seed(0))  # 3 runs x 2 sequences
    alone, together = tiny_llama(), tiny_llama()
    la, lt = _attached(alone, False), _attached(together, True)
    assert all(m.siblings is None for m in la.values())
    grouped = [n for n, m in lt.items() if m.siblings is not None]
    assert len(grouped) == 2 * 5  # q, k, v, gate, up of each layer
    if compiled:  # dynamo traces the shared outputs (and the product-then-add path) with no graph break
        for model in (alone, together):
            for block in model.model.layers:
                block.compile(backend="aot_eager", fullgraph=True)
    loss_a, grads_a = _loss_and_grads(alone, la, ids)
    loss_t, grads_t = _loss_and_grads(together, lt, ids)
    torch.testing.assert_close(loss_t, loss_a, rtol=1e-6, atol=0)
    for n in grads_a:  # (fp32: the summation orders differ, so to 1e-4 of each gradient's largest element)
        for ga, gt in zip(grads_a[n], grads_t[n]):
            torch.testing.assert_close(gt, ga, rtol=1e-4, atol=1e-4 * ga.abs().max().item())
    group = lt[grouped[0]].siblings
    assert group.x is None and group.pending == {}  # nothing kept past the forward


@pytest.fixture
def added(monkeypatch):
    """The path until 2026-11-27: the base output, then the update added to it (``MultiLoRALinear.merged`` False)."""
    monkeypatch.setattr(multi.MultiLoRALinear, "merged", False)


@pytest.mark.parametrize("group", [False, True])
def test_the_merged_gemm_the_product_then_add_and_the_one_baddbmm_agree(tiny_llama, monkeypatch, group):
    """The merged GEMM (lorainit.merged: traced by torch.compile, here aot_eager with fullgraph), the update added
    after the product (eager) and the one out-of-place baddbmm give one loss and one set of gradients."""
    ids = torch.randint(0, 64, (3 * 2, 7), generator=torch.Generator().manual_seed(2))
    results = []
    for compiled, fused_add in ((True, True), (False, True), (False, False)):
        monkeypatch.setattr(multi.MultiLoRALinear, "fused_add", fused_add)
        model = tiny_llama()
        layers = _attached(model, group)
        if compiled:
            for block in model.model.layers:
                block.compile(backend="aot_eager", fullgraph=True)
        results.append(_loss_and_grads(model, layers, ids))
    new = results[0]
    for old in results[1:]:
        torch.testing.assert_close(new[0], old[0], rtol=1e-6, atol=0)
        for n in new[1]:
            for gn, go in zip(new[1][n], old[1][n]):
                torch.testing.assert_close(gn, go, rtol=1e-4, atol=1e-4 * go.abs().max().item())


def test_a_bert_compiled_on_the_merged_gemm_equals_its_eager_added_path(tiny_bert):
    """BERT's query/key/value siblings and its biased dense layers (attention output, intermediate, output)."""
    ids = torch.randint(0, 64, (3 * 2, 7), generator=torch.Generator().manual_seed(6))
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    results = []
    for compiled in (True, False):
        model = tiny_bert()
        with torch.no_grad():  # (transformers starts BERT's biases at zero: nonzero ones, so that they are tested)
            for m in multi.targets_of(model, BERT).values():
                m.bias.copy_(torch.randn(m.bias.shape, generator=torch.Generator().manual_seed(m.bias.numel())))
        layers = _attached(model, True, targets=BERT)
        if compiled:
            for block in model.bert.encoder.layer:
                block.compile(backend="aot_eager", fullgraph=True)
        results.append(_loss_and_grads(model, layers, ids, labels))
    (loss_m, grads_m), (loss_a, grads_a) = results
    assert any(m.base.bias is not None and m.siblings is None for m in layers.values())  # (biased layers alone)
    torch.testing.assert_close(loss_m, loss_a, rtol=1e-6, atol=0)
    for n in grads_a:
        for gm, ga in zip(grads_m[n], grads_a[n]):
            torch.testing.assert_close(gm, ga, rtol=1e-4, atol=1e-4 * ga.abs().max().item())


def test_eager_takes_the_added_path_and_a_compiled_block_the_merged_gemm(tiny_llama, monkeypatch):
    calls = []
    real = merged.outputs
    monkeypatch.setattr(merged, "outputs", lambda *a: calls.append(len(a[3])) or real(*a))
    model = tiny_llama()
    _attached(model, True)
    ids = torch.randint(0, 64, (3 * 2, 7), generator=torch.Generator().manual_seed(5))
    model(input_ids=ids)
    assert calls == []
    for block in model.model.layers:
        block.compile(backend="aot_eager", fullgraph=True)
    model(input_ids=ids)
    assert sorted(calls) == [1, 1, 1, 1, 2, 2, 3, 3]  # per layer: q/k/v, gate/up together; o and down alone
    monkeypatch.setattr(multi.MultiLoRALinear, "merged", False)
    torch._dynamo.reset()
    calls.clear()
    model(input_ids=ids)
    assert calls == []


def test_a_sibling_called_with_another_input_computes_alone(tiny_llama):
    model = tiny_llama()
    layers = _attached(model, True)
    q, k = layers["model.layers.0.self_attn.q_proj"], layers["model.layers.0.self_attn.k_proj"]
    x, other = torch.randn((2, 3, 4, 32), generator=torch.Generator().manual_seed(3)).unbind()
    q(x)  # k's outputs for x are kept
    got = k(other)
    want = k.base(other).reshape(3, -1, 16) + 0.5 * torch.bmm(
        torch.bmm(other.reshape(3, -1, 32), k.adapter_A(torch.float32).transpose(1, 2)),
        k.adapter_B(torch.float32).transpose(1, 2),
    )
    torch.testing.assert_close(got, want.reshape(got.shape))


def test_the_group_shares_the_weights_storage_and_detach_gives_each_its_own_back(tiny_llama):
    model = tiny_llama()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    layers = _attached(model, True)
    q, k = layers["model.layers.0.self_attn.q_proj"], layers["model.layers.0.self_attn.k_proj"]
    assert q.base.weight.untyped_storage().data_ptr() == k.base.weight.untyped_storage().data_ptr()
    multi.detach(model)
    assert q.base.weight.untyped_storage().data_ptr() != k.base.weight.untyped_storage().data_ptr()
    assert q.base.weight.untyped_storage().nbytes() == q.base.weight.numel() * 4  # no longer the group's storage
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    for n in before:
        assert torch.equal(after[n], before[n]), n


def test_a_layer_alone_adds_its_update_in_place_with_no_copy_in_its_backward(tiny_llama, added):
    model = tiny_llama()
    layers = _attached(model, False)
    q = layers["model.layers.0.self_attn.q_proj"]
    x = torch.randn(3, 4, 32, requires_grad=True)
    y = q(x)
    seen, todo = set(), [y.grad_fn]
    while todo:  # every node of y's backward graph
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo += [n for n, _ in node.next_functions]
    names = {type(node).__name__ for node in seen}
    assert "BaddbmmBackward0" in names and "CopySlices" not in names  # (an in-place add to a view copies the grad)


def test_the_groups_backward_concatenates_no_output_gradients(tiny_llama):
    """The parts' gradients reach x as sum_i g_i W_i (siblings._Shared): no cat of (rows, sum out_i) in the backward,
    where the split's own backward would concatenate them (gate/up: 2 x 48 wide in the tiny Llama)."""
    model = tiny_llama()
    layers = _attached(model, True)
    outs = {tuple(m.siblings.outs) for m in layers.values() if m.siblings is not None}
    assert outs == {(32, 16, 16), (48, 48)}  # q/k/v (GQA: 4 heads, 2 kv heads) and gate/up
    ids = torch.randint(0, 64, (3 * 2, 7), generator=torch.Generator().manual_seed(4))
    loss = model(input_ids=ids, labels=ids).loss
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        loss.backward()
    # (a split's backward, SplitWithSizesBackward0, concatenates its parts' gradients; its input shapes are theirs)
    joins = [e.input_shapes for e in prof.events() if e.name == "SplitWithSizesBackward0"]
    widths = {tuple(shape[-1] for shape in parts) for parts in joins}
    assert widths == {(4, 4), (4, 4, 4)}, widths  # only the adapters' x A^T parts, (K, rows, r) each: small
