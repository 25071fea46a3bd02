"""Updates of the starting latents as injected strategies (SPEC.md sections 4 and 10).

Each strategy against its equation written out by hand in float64, the norm regularizer's
analytic gradient against autograd, skip semantics, per-item independence, exact resume,
presets, errors, and the jsonargparse factory injection a config uses.
"""

import inspect
import io
from typing import Callable, Sequence

import pytest
import torch
from torch import Tensor

from doodl.core.updates import (
    AdamWUpdate, DOODLOptimizer, LatentUpdate, NesterovSGDUpdate, NormRegularizer, UpdateFactory, update_preset,
)

STRATEGIES = [DOODLOptimizer, AdamWUpdate, NesterovSGDUpdate]
F64 = dict(rtol=1e-12, atol=1e-14)


def leaf(v: Tensor) -> torch.nn.Parameter:
    return torch.nn.Parameter(v.detach().clone())


def make_pair(shape=(2, 3, 4, 4), tied=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    y = x.clone() if tied else x + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
    return leaf(x), leaf(y)


def make_grads(shape, n, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(shape, generator=g, dtype=torch.float64),
             scale * torch.randn(shape, generator=g, dtype=torch.float64)) for _ in range(n)]


def feed(update, pairs, grads_per_pair):
    """One step: set each pair's gradients (None: no gradient), step, return the flags."""
    update.zero_grad()
    for (x, y), grads in zip(pairs, grads_per_pair):
        if grads is not None:
            x.grad, y.grad = grads[0].clone(), grads[1].clone()
    return update.step()


def hand_clip(g, max_norm):
    """Per item: g * min(1, max_norm / (||g|| + 1e-6)), written out item by item."""
    out = []
    for gb in g:
        out.append(gb * min(1.0, max_norm / (gb.norm().item() + 1e-6)))
    return torch.stack(out)


def hand_reg_grad(v, lam):
    """dR/dv of R = lam * (0.5 ||v||^2 - (d-1) log ||v||), item by item."""
    out = []
    for vb in v:
        d, n2 = vb.numel(), (vb * vb).sum()
        out.append(lam * (vb - (d - 1) * vb / n2))
    return torch.stack(out)


# ----------------------------------------------------------------------------- equations

@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("max_norm", [None, 10.0])  # DNO's 1.0 (both items clipped), or item 0 free
def test_adamw_matches_hand_equations(tied, max_norm):
    shape = (2, 3, 4, 4)
    x, y = make_pair(shape, tied)
    x0, y0 = x.detach().clone(), y.detach().clone()
    grads = make_grads(shape, 3)
    for gx, gy in grads:
        gx[1] *= 10.0  # item 1 (norm ~70) far above the clip norm, item 0 (norm ~7) below 10
        gy[1] *= 10.0
    norms = [g.flatten(1).norm(dim=1) for g in grads[0]]
    assert all(n[0] < 10 < n[1] for n in norms)
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.01
    upd = AdamWUpdate([(x, y)], tied=tied) if max_norm is None else AdamWUpdate([(x, y)], tied=tied, max_grad_norm=max_norm)
    max_norm = 1.0 if max_norm is None else max_norm
    for gx, gy in grads:
        assert feed(upd, [(x, y)], [(gx, gy)]) == [True]
    lat = [x0.clone(), y0.clone()]
    m = [torch.zeros_like(x0), torch.zeros_like(x0)]
    v = [torch.zeros_like(x0), torch.zeros_like(x0)]
    for t, (gx, gy) in enumerate(grads, start=1):
        gs = [(gx + gy) / 2] * 2 if tied else [gx, gy]
        for k in range(2):
            g = hand_clip(gs[k], max_norm)
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            mhat, vhat = m[k] / (1 - b1 ** t), v[k] / (1 - b2 ** t)
            lat[k] = lat[k] * (1 - lr * wd) - lr * mhat / (vhat.sqrt() + eps)
        if tied:
            lat = [(lat[0] + lat[1]) / 2] * 2
    torch.testing.assert_close(x.detach(), lat[0], **F64)
    torch.testing.assert_close(y.detach(), lat[1], **F64)


def test_adamw_equals_torch_adamw_on_one_latent():
    """Untied, B=1, no clip: the update is torch.optim.AdamW with DNO's lr on the same gradients."""
    x, y = make_pair((1, 3, 4, 4), tied=False)
    ref = leaf(x)
    opt = torch.optim.AdamW([ref], lr=0.01)
    upd = AdamWUpdate([(x, y)], tied=False, max_grad_norm=None)
    for gx, gy in make_grads((1, 3, 4, 4), 4):
        feed(upd, [(x, y)], [(gx, gy)])
        ref.grad = gx.clone()
        opt.step()
    torch.testing.assert_close(x.detach(), ref.detach(), **F64)


@pytest.mark.parametrize("tied", [True, False])
def test_nesterov_with_norm_regularizer_matches_hand_equations(tied):
    shape = (2, 3, 4, 4)
    x, y = make_pair(shape, tied)
    x0, y0 = x.detach().clone(), y.detach().clone()
    grads = make_grads(shape, 3, scale=0.01)
    for gx, gy in grads:
        gx[1] *= 50.0  # item 1 (norm ~3.5) clipped to ReNO's 0.1, item 0 (norm ~0.07) not
        gy[1] *= 50.0
    assert all(n[0] < 0.1 < n[1] for n in (g.flatten(1).norm(dim=1) for g in grads[0]))
    lr, mom, clip, lam = 5.0, 0.9, 0.1, 0.01
    upd = NesterovSGDUpdate([(x, y)], tied=tied)
    for gx, gy in grads:
        assert feed(upd, [(x, y)], [(gx, gy)]) == [True]
    lat, buf = [x0.clone(), y0.clone()], [None, None]
    for gx, gy in grads:
        gs = [gx + hand_reg_grad(lat[0], lam), gy + hand_reg_grad(lat[1], lam)]
        if tied:
            gs = [(gs[0] + gs[1]) / 2] * 2
        for k in range(2):
            g = hand_clip(gs[k], clip)
            buf[k] = g if buf[k] is None else mom * buf[k] + g
            lat[k] = lat[k] - lr * (g + mom * buf[k])
        if tied:
            lat = [(lat[0] + lat[1]) / 2] * 2
    torch.testing.assert_close(x.detach(), lat[0], **F64)
    torch.testing.assert_close(y.detach(), lat[1], **F64)


def test_norm_regularizer_gradient_is_autograds():
    v = torch.randn(3, 4, 5, 5, dtype=torch.float64) * torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64).view(3, 1, 1, 1)
    reg = NormRegularizer(0.01)
    w = v.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(reg.value(w).sum(), w)
    torch.testing.assert_close(reg.grad(v), g, **F64)
    torch.testing.assert_close(reg.grad(v), hand_reg_grad(v, 0.01), **F64)
    # value per item, by hand; and its minimum lies on the sphere of radius sqrt(d - 1)
    d = v[0].numel()
    for b in range(3):
        n = v[b].norm()
        assert reg.value(v)[b].item() == pytest.approx(0.01 * (0.5 * n.item() ** 2 - (d - 1) * n.log().item()), rel=1e-12)
    on_sphere = v * ((d - 1) ** 0.5 / v.flatten(1).norm(dim=1)).view(3, 1, 1, 1)
    assert reg.grad(on_sphere).abs().max().item() < 1e-15
    half = v.half()
    assert reg.grad(half).dtype == torch.float16  # computed in float32, returned in the latent's dtype
    torch.testing.assert_close(reg.grad(half).double(), reg.grad(half.float().double()), rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize("cls", STRATEGIES)
def test_regularizer_is_the_loss_terms_gradient(cls):
    """regularizer='norm' equals the same update without it, fed grad + autograd of R(x) + R(y)."""
    shape = (2, 3, 4, 4)
    grads = make_grads(shape, 3, scale=1e-3)
    kw = dict(tied=False, perturb=0.0, renormalize=False)
    x1, y1 = make_pair(shape, tied=False)
    x2, y2 = leaf(x1), leaf(y1)
    with_reg = cls([(x1, y1)], regularizer="norm", regularizer_weight=0.05, **kw)
    without = cls([(x2, y2)], regularizer="none", **kw)
    reg = NormRegularizer(0.05)
    for gx, gy in grads:
        feed(with_reg, [(x1, y1)], [(gx, gy)])
        w = [x2.detach().clone().requires_grad_(True), y2.detach().clone().requires_grad_(True)]
        rx, ry = torch.autograd.grad((reg.value(w[0]) + reg.value(w[1])).sum(), w)
        feed(without, [(x2, y2)], [(gx + rx, gy + ry)])
    torch.testing.assert_close(x1.detach(), x2.detach(), **F64)
    torch.testing.assert_close(y1.detach(), y2.detach(), **F64)
    torch.testing.assert_close(with_reg.regularizer_value()[0], reg.value(x1.detach()) + reg.value(y1.detach()))


# ----------------------------------------------------------------------------- frame

@pytest.mark.parametrize("cls", STRATEGIES)
def test_items_and_pairs_are_independent(cls):
    """A pair without a gradient is not moved and gets no state; an item's trajectory is the same
    alone as beside another item and another pair with huge gradients (clip, norm, regularizer and
    optimizer state are all per item)."""
    shape = (2, 3, 4, 4)
    grads_a, grads_b = make_grads(shape, 3, seed=1), make_grads(shape, 3, seed=2, scale=1e3)
    a, b = make_pair(shape, seed=0), make_pair(shape, seed=5)
    b_before = [v.detach().clone() for v in b]
    upd = cls([a, b], perturb=0.0)
    for ga in grads_a:
        assert feed(upd, [a, b], [ga, None]) == [True, False]
    for v, v0 in zip(b, b_before):
        assert torch.equal(v.detach(), v0) and not upd.optimizer.state.get(v)

    a, b = make_pair(shape, seed=0), make_pair(shape, seed=5)
    alone = (leaf(a[0][:1]), leaf(a[1][:1]))
    both, single = cls([a, b], perturb=0.0), cls([alone], perturb=0.0)
    for ga, gb in zip(grads_a, grads_b):
        big = (ga[0].clone(), ga[1].clone())
        big[0][1] *= 1e3  # item 1 of pair a: a huge gradient
        big[1][1] *= 1e3
        assert feed(both, [a, b], [big, gb]) == [True, True]
        feed(single, [alone], [(ga[0][:1], ga[1][:1])])
    # item 0 in a batch of 2 against alone: two reductions over different shapes, so a float64 tolerance
    # (a leak of item 1's 1e3-times gradient would move item 0 by far more)
    torch.testing.assert_close(a[0].detach()[:1], alone[0].detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a[1].detach()[:1], alone[1].detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", STRATEGIES)
def test_non_finite_gradient_skips_the_pair(cls):
    p1, p2 = make_pair((1, 4, 2, 2), seed=0), make_pair((1, 4, 2, 2), seed=1)
    before = p1[0].detach().clone()
    upd = cls([p1, p2], regularizer="none" if cls is DOODLOptimizer else None)
    bad = torch.zeros(1, 4, 2, 2, dtype=torch.float64)
    bad[0, 0, 0, 0] = float("inf")
    good = make_grads((1, 4, 2, 2), 1)[0]
    assert feed(upd, [p1, p2], [(bad, torch.zeros_like(bad)), good]) == [False, True]
    assert torch.equal(p1[0].detach(), before) and not upd.optimizer.state.get(p1[0])
    assert not torch.equal(p2[0].detach(), make_pair((1, 4, 2, 2), seed=1)[0].detach())
    # a pair with no gradient at all is skipped too, even where a regularizer would move it
    assert feed(upd, [p1, p2], [None, good]) == [False, True]
    assert torch.equal(p1[0].detach(), before)


@pytest.mark.parametrize("name", ["paper", "dno", "reno"])
def test_resume_continues_bitwise(name):
    """Stop after 2 of 5 steps, save (through torch.save, as a checkpoint does), rebuild with a
    differently seeded generator, load: the same latents bit for bit as without the stop."""
    shape = (1, 4, 4, 4)
    grads = make_grads(shape, 5, scale=1e-2)

    def run(split):
        factory = update_preset(name, perturb=1e-3)
        pair = make_pair(shape, tied=False, seed=4)
        upd = factory([pair], torch.Generator().manual_seed(3))
        for k, g in enumerate(grads):
            if k == split:
                buf = io.BytesIO()
                torch.save(upd.state_dict(), buf)
                pair = (leaf(pair[0]), leaf(pair[1]))
                upd = factory([pair], torch.Generator().manual_seed(99))
                upd.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=False))
            feed(upd, [pair], [g])
        return torch.cat([v.detach() for v in pair])

    assert torch.equal(run(split=2), run(split=-1))


def test_state_of_another_strategy_is_refused_and_old_states_load():
    pair = make_pair((1, 4))
    with pytest.raises(ValueError, match="AdamWUpdate.*resume with the update"):
        DOODLOptimizer([pair]).load_state_dict(AdamWUpdate([pair]).state_dict())
    old = DOODLOptimizer([pair]).state_dict()
    del old["kind"]  # a state saved before the strategies existed: the paper's
    DOODLOptimizer([pair]).load_state_dict(old)


# ----------------------------------------------------------------------------- presets, errors

def test_presets_hold_the_published_settings():
    pair = make_pair((1, 4))
    paper = update_preset("paper")([pair], None)
    assert type(paper) is DOODLOptimizer
    assert (paper.grad_scale, paper.clip_grad_val, paper.perturb, paper.tied, paper.renormalize) == (0.5, 1e-3, 1e-4, True, True)
    assert paper.optimizer.param_groups[0]["momentum"] == 0.9 and paper.regularizer is None
    dno = update_preset("dno")([pair], None)
    group = dno.optimizer.param_groups[0]
    assert isinstance(dno.optimizer, torch.optim.AdamW) and group["lr"] == 0.01 and dno.max_grad_norm == 1.0
    assert (dno.perturb, dno.renormalize, dno.regularizer) == (0.0, False, None)
    reno = update_preset("reno")([pair], None)
    group = reno.optimizer.param_groups[0]
    assert isinstance(reno.optimizer, torch.optim.SGD) and group["nesterov"] and group["lr"] == 5.0
    assert group["momentum"] == 0.9 and group["dampening"] == 0 and reno.max_grad_norm == 0.1
    assert isinstance(reno.regularizer, NormRegularizer) and reno.regularizer.weight == 0.01
    assert (reno.perturb, reno.renormalize) == (0.0, False)
    over = update_preset("reno", lr=2.0, regularizer="none")([pair], None)
    assert over.optimizer.param_groups[0]["lr"] == 2.0 and over.regularizer is None
    for u in (paper, dno, reno):
        assert isinstance(u, LatentUpdate)


@pytest.mark.parametrize("call, match", [
    (lambda: update_preset("adam"), r"unknown update preset 'adam': known presets are 'paper', 'dno', 'reno'"),
    (lambda: update_preset("dno", momentum=0.5), r"no setting 'momentum'.*lr, betas"),
    (lambda: update_preset("reno", regularizer="gauss"), r"unknown regularizer 'gauss': known regularizers are 'norm', 'none'"),
    (lambda: update_preset("reno", lr=-1.0), r"lr must be a finite number > 0"),
    (lambda: update_preset("paper", regularizer="norm"), r"renormalize=False to use the regularizer"),
    (lambda: update_preset("reno", regularizer_weight=0.0), r"regularizer_weight must be"),
    (lambda: update_preset("reno", momentum=0.0), r"momentum must be in \(0, 1\)"),
    (lambda: update_preset("dno", betas=(0.9, 1.0)), r"betas"),
    (lambda: update_preset("dno", max_grad_norm=0.0), r"max_grad_norm"),
    (lambda: DOODLOptimizer([make_pair((1, 4))], 0.5), r"generator must be a torch.Generator"),
])
def test_bad_settings(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_old_keyword_calls_and_generator_positions():
    """Every keyword of the former signature still works; the generator goes second or by name."""
    old = ["grad_scale", "clip_grad_val", "momentum", "perturb", "tied", "renormalize", "generator"]
    params = inspect.signature(DOODLOptimizer).parameters
    assert list(params)[:2] == ["pairs", "generator"] and set(old) <= set(params)
    gen = torch.Generator().manual_seed(0)
    pair = make_pair((1, 4))
    assert DOODLOptimizer([pair], generator=gen, grad_scale=0.5, clip_grad_val=None, momentum=0.5,
                          perturb=0.0, tied=False, renormalize=False).generator is gen
    for cls in STRATEGIES:
        assert cls([pair], gen).generator is gen and cls([pair], generator=gen).generator is gen


# ----------------------------------------------------------------------------- config injection

UpdateType = Callable[[Sequence[tuple[Tensor, Tensor]], torch.Generator | None], LatentUpdate]


def _parser(default=DOODLOptimizer, typehint=UpdateType):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--update", type=typehint, default=default)
    return parser


@pytest.mark.parametrize("typehint", [UpdateType, UpdateFactory])
def test_jsonargparse_injects_a_factory_called_with_pairs_and_generator(typehint):
    parser = _parser(typehint=typehint)
    cfg = parser.parse_object({"update": {"class_path": "doodl.core.update.DOODLOptimizer",
                                          "init_args": {"momentum": 0.8}}})
    factory = parser.instantiate(cfg)["update"]
    pair, gen = make_pair((1, 4)), torch.Generator().manual_seed(0)
    upd = factory([pair], gen)
    assert type(upd) is DOODLOptimizer and upd.generator is gen
    assert upd.optimizer.param_groups[0]["momentum"] == 0.8 and upd.clip_grad_val == 1e-3
    # the default (no config) is the paper's update
    assert type(parser.instantiate(parser.parse_object({}))["update"]([pair], gen)) is DOODLOptimizer


def test_switching_class_path_gets_the_new_strategys_defaults():
    """jsonargparse keeps same-named settings of the earlier class when class_path changes; the
    strategy-dependent ones (perturb, renormalize, regularizer) default to None, the new one's."""
    parser = _parser()
    cfg = parser.parse_object({"update": {"class_path": "NesterovSGDUpdate"}})
    upd = parser.instantiate(cfg)["update"]([make_pair((1, 4))], None)
    assert type(upd) is NesterovSGDUpdate
    assert (upd.perturb, upd.renormalize, upd.regularizer_name) == (0.0, False, "norm")
    cfg = parser.parse_object({"update": {"class_path": "doodl.core.updates.AdamWUpdate", "init_args": {"lr": 0.1}}})
    upd = parser.instantiate(cfg)["update"]([make_pair((1, 4))], None)
    assert upd.optimizer.param_groups[0]["lr"] == 0.1 and (upd.perturb, upd.renormalize) == (0.0, False)


def test_jsonargparse_rejects_unknown_settings():
    from jsonargparse import ArgumentError

    with pytest.raises(ArgumentError, match="momentumx"):
        _parser().parse_object({"update": {"class_path": "DOODLOptimizer", "init_args": {"momentumx": 0.8}}})
