"""The DOODL update reproduces the published rule (SPEC.md section 4, step 5)."""

import pytest
import torch

from doodl import DOODLOptimizer


def reference_rule(x, y, grads, z_norm, noises, tied, clip=1e-3, scale=0.5, mom=0.9, perturb=1e-4):
    """The reference code's rule written out by hand, step by step, on plain tensors."""
    mx, my = torch.zeros_like(x), torch.zeros_like(y)
    for (gx, gy), n in zip(grads, noises):
        if tied:
            gx = gy = (gx + gy) / 2
        gx = (-scale * gx).clamp(-clip, clip)
        gy = (-scale * gy).clamp(-clip, clip)
        mx, my = mom * mx + gx, mom * my + gy
        x, y = x + mx + perturb * n, y + my + perturb * n
        if tied:
            x = y = (x + y) / 2
        x = x * z_norm / x.norm()
        y = y * z_norm / y.norm()
    return x, y


@pytest.mark.parametrize("tied", [True, False])
def test_matches_reference_rule(tied):
    torch.manual_seed(0)
    z = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    y0 = z.clone() if tied else z + 0.1 * torch.randn_like(z)
    x, y = torch.nn.Parameter(z.clone()), torch.nn.Parameter(y0.clone())
    # gradients around the clip value, so that clipping acts on some entries only
    grads = [(3e-3 * torch.randn_like(z), 3e-3 * torch.randn_like(z)) for _ in range(3)]
    gen = torch.Generator().manual_seed(7)
    opt = DOODLOptimizer([(x, y)], generator=gen, tied=tied)
    for gx, gy in grads:
        opt.zero_grad()
        x.grad, y.grad = gx.clone(), gy.clone()
        assert opt.step() == [True]
    g2 = torch.Generator().manual_seed(7)
    noises = [torch.randn(z.shape, generator=g2, dtype=z.dtype) for _ in grads]
    ex, ey = reference_rule(z.clone(), y0.clone(), grads, z.norm(), noises, tied)
    torch.testing.assert_close(x.detach(), ex, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(y.detach(), ey, rtol=1e-12, atol=1e-14)
    if tied:
        assert torch.equal(x, y)


def test_hand_computed_single_element():
    """One element, no noise, no renormalization: numbers worked out on paper."""
    x = torch.nn.Parameter(torch.tensor([[1.0]], dtype=torch.float64))
    y = torch.nn.Parameter(torch.tensor([[1.0]], dtype=torch.float64))
    opt = DOODLOptimizer([(x, y)], perturb=0.0, renormalize=False, clip_grad_val=1e-3)
    x.grad, y.grad = torch.tensor([[1e-2]], dtype=torch.float64), torch.tensor([[-2e-3]], dtype=torch.float64)
    opt.step()  # tied grad 4e-3 -> scaled 2e-3 -> clipped 1e-3; m = 1e-3; x = 1 - 1e-3
    assert x.item() == pytest.approx(0.999, abs=1e-15)
    x.grad, y.grad = torch.tensor([[1e-3]], dtype=torch.float64), torch.tensor([[1e-3]], dtype=torch.float64)
    opt.step()  # scaled 5e-4; m = 0.9e-3 + 5e-4 = 1.4e-3; x = 0.999 - 1.4e-3
    assert x.item() == pytest.approx(0.9976, abs=1e-15) and y.item() == x.item()


def test_items_are_independent_and_norm_is_per_item():
    torch.manual_seed(1)
    a = [torch.nn.Parameter(torch.randn(2, 4, 3, 3)) for _ in range(2)]
    b = [torch.nn.Parameter(torch.randn(1, 4, 3, 3)) for _ in range(2)]
    norms = a[0].detach().flatten(1).norm(dim=1)
    b_before = b[0].detach().clone()
    opt = DOODLOptimizer([tuple(a), tuple(b)], perturb=0.0)
    a[0].grad, a[1].grad = torch.randn_like(a[0]), torch.randn_like(a[1])
    assert opt.step() == [True, False]  # b has no gradient: it must not move
    torch.testing.assert_close(b[0].detach(), b_before, rtol=0, atol=0)
    torch.testing.assert_close(a[0].detach().flatten(1).norm(dim=1), norms)


def test_non_finite_gradient_skips_the_pair():
    x1, y1 = torch.nn.Parameter(torch.ones(1, 4)), torch.nn.Parameter(torch.ones(1, 4))
    x2, y2 = torch.nn.Parameter(torch.ones(1, 4)), torch.nn.Parameter(torch.ones(1, 4))
    opt = DOODLOptimizer([(x1, y1), (x2, y2)], perturb=0.0, renormalize=False)
    x1.grad = torch.tensor([[float("nan"), 0, 0, 0]])
    y1.grad = torch.zeros(1, 4)
    x2.grad = y2.grad = torch.ones(1, 4)
    assert opt.step() == [False, True]
    assert torch.equal(x1.detach(), torch.ones(1, 4)) and "momentum_buffer" not in opt.optimizer.state.get(x1, {})
    assert bool((x2 < 1).all())


def test_state_dict_resumes_exactly():
    def run(split):
        torch.manual_seed(2)
        x, y = torch.nn.Parameter(torch.randn(1, 4, 2, 2)), None
        y = torch.nn.Parameter(x.detach().clone())
        opt = DOODLOptimizer([(x, y)], generator=torch.Generator().manual_seed(3))
        gs = [torch.randn(1, 4, 2, 2) * 1e-3 for _ in range(4)]
        for k, g in enumerate(gs):
            if k == split:
                state = {k2: v for k2, v in opt.state_dict().items()}
                xs = x.detach().clone()
                x2 = torch.nn.Parameter(xs.clone())
                y2 = torch.nn.Parameter(xs.clone())
                opt = DOODLOptimizer([(x2, y2)], generator=torch.Generator().manual_seed(99))
                opt.load_state_dict(state)
                x, y = x2, y2
            x.grad, y.grad = g.clone(), g.clone()
            opt.step()
        return x.detach()

    torch.testing.assert_close(run(split=2), run(split=-1), rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"clip_grad_val": 0.0}, "clip_grad_val"), ({"perturb": -1.0}, "perturb")],
)
def test_bad_arguments(kwargs, match):
    x, y = torch.nn.Parameter(torch.ones(1, 4)), torch.nn.Parameter(torch.ones(1, 4))
    with pytest.raises(ValueError, match=match):
        DOODLOptimizer([(x, y)], **kwargs)


def test_bad_pairs():
    with pytest.raises(ValueError, match="empty"):
        DOODLOptimizer([])
    with pytest.raises(ValueError, match="requires_grad"):
        DOODLOptimizer([(torch.ones(1, 4), torch.ones(1, 4))])
    with pytest.raises(ValueError, match="one shape"):
        DOODLOptimizer([(torch.nn.Parameter(torch.ones(1, 4)), torch.nn.Parameter(torch.ones(1, 5)))])
