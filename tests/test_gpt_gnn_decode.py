"""GPT-GNN: incremental (cached) decoding vs the parallel forward used in training, and the generation path of the
design task (seqzoo/mixers/attention/gnn_attention.py, seqzoo/models/protein/gpt_gnn.py).

* a CausalLM with ``gpt_gnn_attention`` (gnn_layers 1, 2, 3; 0 as the control), float64, fed one token at a time
  through its state gives the parallel forward's logits at *every* position of a sequence longer than the training
  sequences (128 bytes), also after an uneven prefill, and the same with the adjacency options on;
* position t's logits depend on positions ≤ t only in both modes (the stepped logits equal a forward of the prefix);
* ``design`` (greedy) and ``predict`` go through the same cached ``generate`` path, whose output equals re-running
  the whole sequence at every step, on design prompts long enough to reach every answer length;
* under bf16 autocast (how the trainer runs on a GPU) the attention weights and the GCN are still computed in
  float32, as the mixer documents, so the training forward and the float32 generation see the same adjacency.
"""

from __future__ import annotations

import random

import pytest
import torch

from seqzoo.generation import generate
from seqzoo.mixers.attention.gnn_attention import GraphAttention, graph_conv
from seqzoo.models import CausalLM, ModelConfig
from seqzoo.models.protein.gpt_gnn import build_gpt_gnn, complete, design, gpt_gnn_config
from seqzoo.tasks.protein.physics import random_protein, sequence_content
from seqzoo.tasks.protein.prompts import encode, make_prompt, parse_answer, round_content

F64 = torch.float64
LONG = 160  # > ProteinPromptTask's default seq_len (128)


def gnn_lm(gnn_layers: int, seed: int = 0, dtype=F64, **options) -> CausalLM:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=256, d_model=32, n_layers=3, mixer="gpt_gnn_attention",
                      mixer_options={"gpt_gnn_attention": {"n_heads": 4, "gnn_layers": gnn_layers, **options}})
    model = CausalLM(cfg).to(dtype).eval()
    with torch.no_grad():  # sharper attention and a GCN whose read-out matters
        for block in model.blocks:
            m = block.mixer
            m.q_proj.weight.mul_(3.0)
            m.k_proj.weight.mul_(3.0)
            for p in m.gnn.parameters():
                p.add_(0.5 * torch.randn_like(p))
            if m.gnn_out is not None:
                m.gnn_out.weight.mul_(3.0)
    return model


def stepped_logits(model: CausalLM, tokens: torch.Tensor, prefill: int = 1) -> torch.Tensor:
    with torch.no_grad():
        logits, state = model(tokens[:, :prefill])
        outs = [logits]
        for t in range(prefill, tokens.shape[1]):
            logits, state = model(tokens[:, t:t + 1], state)
            outs.append(logits)
    return torch.cat(outs, 1)


@pytest.mark.parametrize("gnn_layers", [0, 1, 2, 3])
def test_stepwise_decoding_equals_parallel_forward_at_every_position(gnn_layers):
    model = gnn_lm(gnn_layers)
    tokens = torch.randint(0, 256, (2, LONG), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, full_state = model(tokens)
    scale = full.abs().max().item()
    for prefill in (1, 37):
        step = stepped_logits(model, tokens, prefill)
        err = (step - full).abs().amax(dim=(0, 2))  # per position
        assert err.max().item() <= 1e-11 * scale, (prefill, err.argmax().item(), err.max().item())
    if gnn_layers:  # the GCN message cache of every layer holds every position
        _, state = model(tokens[:, :LONG - 1])
        _, state = model(tokens[:, LONG - 1:], state)
        for a, b in zip(state, full_state):
            assert a["gnn"].shape[1] == LONG and torch.allclose(a["gnn"], b["gnn"], atol=1e-12, rtol=0)


@pytest.mark.parametrize("options", [{"gnn_add_identity": True, "gnn_threshold_min": 0.05},
                                     {"gnn_threshold_max": 0.5, "n_kv_heads": 2, "gnn_skip": False}])
def test_stepwise_decoding_with_adjacency_options(options):
    model = gnn_lm(3, **options)
    tokens = torch.randint(0, 256, (2, LONG), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full, _ = model(tokens)
    step = stepped_logits(model, tokens, 5)
    assert (step - full).abs().max().item() <= 1e-11 * full.abs().max().item()


def test_position_t_uses_only_positions_up_to_t_in_both_modes():
    model = gnn_lm(3)
    tokens = torch.randint(0, 256, (1, LONG), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full, _ = model(tokens)
        step = stepped_logits(model, tokens)
        for t in (0, 19, 80, 127, LONG - 1):
            prefix, _ = model(tokens[:, :t + 1])
            assert torch.equal(prefix[:, t], prefix[:, -1])
            assert (prefix[:, t] - full[:, t]).abs().max().item() <= 1e-11 * full.abs().max().item()
            assert (prefix[:, t] - step[:, t]).abs().max().item() <= 1e-11 * full.abs().max().item()


def test_design_and_predict_use_the_cached_path_which_equals_recomputation():
    model = build_gpt_gnn(gpt_gnn_config(gnn_layers=3, d_model=32, n_layers=2, n_heads=2))
    model.eval()
    rng = random.Random(5)
    requests = []
    for _ in range(3):
        s = random_protein(rng)
        requests.append((*round_content(*sequence_content(s)[:2]), len(s)))
    requests.append((0.3, 0.2, 60))
    prompts = [make_prompt("design", helix=h, sheet=e, length=n) for h, e, n in requests]
    budget = max(n for _, _, n in requests) + 8  # what design() asks for
    cached = complete(model, prompts, budget)
    reference = generate(model, [encode(p) for p in prompts], budget, temperature=0.0, eos_id=ord(";"),
                         use_cache=False)
    assert cached == [bytes(r).decode("utf-8", errors="replace") for r in reference]
    # design() is complete() (greedy by default) with this budget, plus parsing
    assert design(model, requests) == [parse_answer("design", c) for c in cached]


def test_attention_weights_and_gcn_stay_float32_under_bf16_autocast():
    torch.manual_seed(0)
    m = GraphAttention(64, n_heads=4, gnn_layers=3).eval()
    with torch.no_grad():
        m.q_proj.weight.mul_(3.0)
        m.k_proj.weight.mul_(3.0)
    x = torch.randn(2, 120, 64)
    with torch.no_grad():
        q, k, v, _ = m.prepare(x, m.init_state(2))
        ref, _ = m.attention_weights(q, k, v, None)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            attn, values = m.attention_weights(q, k, v, None)
        assert attn.dtype == torch.float32 and values.dtype == torch.float32
        assert (attn - ref).abs().max().item() <= 1e-6
        # bf16 q, k, v (the projections' output under autocast): the scores are not rounded again before the softmax
        qb, kb, vb = (t.to(torch.bfloat16).float() for t in (q, k, v))
        ref_b, _ = m.attention_weights(qb, kb, vb, None)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            attn_b, _ = m.attention_weights(q.to(torch.bfloat16), k.to(torch.bfloat16), v.to(torch.bfloat16), None)
        assert attn_b.dtype == torch.float32
        assert (attn_b - ref_b).abs().max().item() <= 1e-6
        # the GCN itself (messages, aggregation, read-out input) in float32 under autocast
        h_ref, msg_ref = graph_conv(ref, values, m.gnn, skip=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h, msg = graph_conv(attn, values, m.gnn, skip=True)
        assert h.dtype == msg.dtype == torch.float32
        assert (h - h_ref).abs().max().item() <= 1e-5 and (msg - msg_ref).abs().max().item() <= 1e-5
