"""Hard-concrete head gates: open at the start, stochastic in training, exactly 0 or 1 with
the probabilities their L0 term says."""

from __future__ import annotations

import torch

from encoders.attention import MultiHeadAttention
from encoders.gates import HardConcreteGate


def test_new_gates_are_open_so_evaluation_outputs_do_not_change() -> None:
    torch.manual_seed(0)
    plain = MultiHeadAttention(16, 4).eval()
    gated = MultiHeadAttention(16, 4, gate=True).eval()
    gated.load_state_dict({**plain.state_dict(), "gate.log_alpha": gated.gate.log_alpha})
    assert torch.equal(gated.gate(), torch.ones(4))
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(gated(x), plain(x), atol=0, rtol=0)


def test_training_draws_lie_in_0_1_and_hit_both_ends() -> None:
    torch.manual_seed(0)
    gate = HardConcreteGate(3).train()
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-3.0, 0.0, 3.0]))
    draws = torch.stack([gate() for _ in range(4000)])  # (4000, 3)
    assert ((draws >= 0) & (draws <= 1)).all()
    assert (draws[:, 1] == 0).any() and (draws[:, 1] == 1).any()
    assert ((draws > 0) & (draws < 1)).any()
    assert draws[:, 0].mean() < draws[:, 1].mean() < draws[:, 2].mean()


def test_open_probability_is_the_chance_a_training_gate_is_nonzero() -> None:
    torch.manual_seed(1)
    gate = HardConcreteGate(4).train()
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-2.0, -0.5, 0.5, 2.0]))
    draws = torch.stack([gate() for _ in range(20000)])
    measured = (draws > 0).float().mean(0)
    torch.testing.assert_close(measured, gate.open_probability().detach(), atol=0.015, rtol=0)


def test_a_penalty_on_open_gates_closes_them_in_evaluation() -> None:
    gate = HardConcreteGate(2)
    optimizer = torch.optim.SGD(gate.parameters(), lr=50.0)
    for _ in range(200):
        optimizer.zero_grad()
        gate.open_probability().sum().backward()
        optimizer.step()
    assert torch.equal(gate.eval()(), torch.zeros(2))
    assert gate.open_probability().max() < 0.05
