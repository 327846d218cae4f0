import pyro
import pytest
import torch
from pyro import poutine

from aevb.models import MODELS, VAE, Batch


@pytest.mark.parametrize("network", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_vae_traces_have_expected_sites_shapes_and_plate_scale(network, likelihood):
    model = VAE(z_dim=3, network=network, hidden_sizes=[32], likelihood=likelihood)
    x = torch.rand(5, 1, 28, 28)
    batch = Batch(x, index=torch.arange(5), num_data=50)
    guide_tr = poutine.trace(model.guide).get_trace(batch)
    model_tr = poutine.trace(poutine.replay(model.model, trace=guide_tr)).get_trace(batch)
    assert guide_tr.nodes["z"]["value"].shape == (5, 3)
    assert model_tr.nodes["x"]["is_observed"]
    assert model_tr.nodes["x"]["fn"].event_shape == (1, 28, 28)
    for tr in (model_tr, guide_tr):
        assert tr.nodes["z"]["scale"] == pytest.approx(10.0)
        assert [f.name for f in tr.nodes["z"]["cond_indep_stack"]] == ["data"]
    assert model.generate(4).shape == (4, 1, 28, 28)
    assert model.reconstruct(x).shape == x.shape


def test_bernoulli_likelihood_refuses_data_outside_unit_interval():
    model = VAE(z_dim=2, hidden_sizes=[8])
    with pytest.raises(ValueError, match=r"\[0, 1\].*divide 8-bit images by 255"):
        model.check_data(torch.full((2, 1, 28, 28), 255.0))
    model.check_data(torch.rand(2, 1, 28, 28))


def test_gaussian_scale_is_floored():
    model = VAE(z_dim=2, hidden_sizes=[8], likelihood="gaussian", min_scale=0.05)
    params = torch.full((1, 2, 28, 28), -50.0)
    assert model.likelihood(params).base_dist.scale.min() >= 0.05


def test_model_registry_lists_names():
    assert {"vae", "linear_gaussian"} <= set(MODELS.names())
    with pytest.raises(KeyError, match="valid models: .*vae"):
        MODELS.get("vea")


def test_two_instances_do_not_share_parameters_through_the_param_store():
    a, b = VAE(z_dim=2, hidden_sizes=[8]), VAE(z_dim=2, hidden_sizes=[8])
    x = torch.rand(3, 1, 28, 28)
    pyro.infer.Trace_ELBO().differentiable_loss(a.model, a.guide, Batch(x))
    pyro.infer.Trace_ELBO().differentiable_loss(b.model, b.guide, Batch(x))
    assert not torch.equal(a.encoder.net[0].weight, b.encoder.net[0].weight)


def test_logit_bernoulli_log_prob_equals_torch_bernoulli_and_survives_expand():
    from aevb.models.families import LogitBernoulli

    logits = torch.randn(3, 4, 5) * 4
    for x in (torch.bernoulli(torch.rand(4, 5)), torch.rand(4, 5)):  # binary and grayscale
        mine, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        ours = LogitBernoulli(logits=mine, validate_args=False).log_prob(x)
        ref = torch.distributions.Bernoulli(logits=theirs, validate_args=False).log_prob(x)
        assert torch.allclose(ours, ref, atol=1e-5)
        ours.sum().backward()
        ref.sum().backward()
        assert torch.allclose(mine.grad, theirs.grad, atol=1e-6)
        with torch.no_grad():  # the evaluation's three-pass form
            assert torch.allclose(LogitBernoulli(logits=mine, validate_args=False).log_prob(x),
                                  ref, atol=1e-5)
    expanded = LogitBernoulli(logits=torch.zeros(5)).expand((2, 5))
    assert isinstance(expanded, LogitBernoulli) and expanded.batch_shape == (2, 5)


def test_lean_normals_and_their_kl_equal_torch_in_value_and_gradient():
    """The training step's Gaussians (LeanNormal, StandardNormal, the closed-form KL to N(0, I))
    give torch's values and gradients; expand to the same shape is the identity."""
    from torch.distributions import Normal, kl_divergence

    from aevb.models.families import VALUE_TYPES, LeanIndependent, LeanNormal, StandardNormal, to_event

    torch.manual_seed(0)
    loc0, scale0 = torch.randn(6, 5), torch.rand(6, 5) + 0.1
    value = torch.randn(4, 6, 5)
    results = []
    for make in (LeanNormal, Normal):
        loc, scale = loc0.clone().requires_grad_(), scale0.clone().requires_grad_()
        q = make(loc, scale)
        p = StandardNormal(torch.zeros(5), torch.ones(5)) if make is LeanNormal \
            else Normal(torch.zeros(5), torch.ones(5))
        total = q.log_prob(value).sum() + p.log_prob(value).sum() + kl_divergence(q, p).sum()
        total.backward()
        results.append((q.log_prob(value), p.log_prob(value), kl_divergence(q, p),
                        loc.grad, scale.grad))
    for ours, ref in zip(*results, strict=True):
        assert torch.allclose(ours, ref, atol=1e-5)
    prior = VALUE_TYPES.get("normal").standard((5,), None, torch.zeros(1))
    assert isinstance(prior, LeanIndependent) and prior.event_shape == (5,)
    q = to_event(LeanNormal(loc0, scale0), 1)
    assert q.expand((6,)) is q
    big = q.expand((2, 6))
    assert isinstance(big, LeanIndependent) and isinstance(big.base_dist, LeanNormal)
    assert big.batch_shape == (2, 6) and torch.allclose(big.log_prob(value[:2]),
                                                        q.log_prob(value[:2]))


def test_bernoulli_pixels_evaluation_log_prob_equals_the_pixelwise_sum():
    """The evaluation's form (sums before the subtraction), for one image shared by k samples
    and for a broadcast image, equals the sum of the pixels' Bernoulli log-densities."""
    from aevb.models.families import BernoulliPixels, build_family

    torch.manual_seed(0)
    logits = torch.randn(7, 3, 1, 4, 4) * 3
    x = torch.bernoulli(torch.rand(3, 1, 4, 4))
    d = build_family("bernoulli", (1, 4, 4))(logits)
    assert isinstance(d, BernoulliPixels) and d.expand((7, 3)) is d
    ref = torch.distributions.Bernoulli(logits=logits).log_prob(x.expand_as(logits)).sum((-3, -2, -1))
    with torch.no_grad():
        assert torch.allclose(d.log_prob(x), ref, atol=1e-4)  # one image, k samples
        assert torch.allclose(d.log_prob(x.expand_as(logits)), ref, atol=1e-4)
    assert torch.allclose(d.log_prob(x), ref, atol=1e-4)  # training path (no grad needed here)
    # the training path (the fused cross-entropy, negated after the sum): value and gradient
    mine, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = build_family("bernoulli", (1, 4, 4))(mine).log_prob(x)
    expected = torch.distributions.Bernoulli(logits=theirs).log_prob(
        x.expand_as(theirs)).sum((-3, -2, -1))
    assert torch.allclose(ours, expected, atol=1e-4)
    (ours * torch.arange(21.0).reshape(7, 3)).sum().backward()
    (expected * torch.arange(21.0).reshape(7, 3)).sum().backward()
    assert torch.allclose(mine.grad, theirs.grad, atol=1e-5)


def test_tanh_activation_outside_autograd_equals_torch_tanh():
    from aevb.models.networks import ACTIVATIONS

    act = ACTIVATIONS.get("tanh")()
    x = torch.linspace(-20, 20, 4001)
    with torch.no_grad():
        assert torch.allclose(act(x), torch.tanh(x), atol=5e-7)
    w = x.clone().requires_grad_()
    act(w).sum().backward()  # training: torch.tanh and its gradient
    assert torch.allclose(w.grad, 1 - torch.tanh(x) ** 2, atol=1e-6)


def test_softplus_activation_is_torchs_softplus_in_value_and_gradient():
    """log(1 + e^x) on the CPU: torch's softplus to float32 rounding over [-100, 100] (its
    threshold at 20 included), the gradient sigma(x), and second derivatives in double."""
    import torch.nn.functional as F

    from aevb.models.networks import ACTIVATIONS

    act = ACTIVATIONS.get("softplus")()
    x = torch.cat([torch.linspace(-100, 100, 20001), torch.tensor([19.999, 20.0, 20.001])])
    w = x.clone().requires_grad_()
    y = act(w)
    assert torch.allclose(y, F.softplus(x), atol=1e-6, rtol=1e-6)
    (y * torch.linspace(-1, 1, len(x))).sum().backward()
    assert torch.allclose(w.grad, torch.sigmoid(x) * torch.linspace(-1, 1, len(x)), atol=1e-7)
    z = torch.linspace(-5, 5, 11, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(act, (z,)) and torch.autograd.gradgradcheck(act, (z,))


def test_bernoulli_log_density_is_torchs_in_value_and_gradient_over_the_whole_range():
    """The CPU kernel against torch's Bernoulli log-density summed over the pixels: logits over
    [-100, 100] (past softplus' threshold both ways), binary and grey-level values, the gradient
    in both arguments, second derivatives in double, and the same value outside autograd."""
    from aevb.models.families import LogitBernoulli
    from aevb.models.kernels import bernoulli_log_density

    torch.manual_seed(0)
    logits = torch.cat([torch.linspace(-100, 100, 400), torch.tensor([19.999, 20.0, 20.001]),
                        torch.randn(197) * 5]).reshape(6, 100)
    for value in (torch.bernoulli(torch.full((6, 100), 0.4)), torch.rand(6, 100)):
        mine, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        v_mine, v_theirs = value.clone().requires_grad_(), value.clone().requires_grad_()
        ours = bernoulli_log_density(mine, v_mine)
        ref = -torch.nn.functional.binary_cross_entropy_with_logits(
            theirs, v_theirs, reduction="none").sum(-1)
        assert torch.allclose(ours, ref, rtol=1e-6, atol=1e-3)  # sums of ~100 terms up to 100
        w = torch.linspace(-1, 1, 6)
        (ours * w).sum().backward()
        (ref * w).sum().backward()
        assert torch.allclose(mine.grad, theirs.grad, atol=1e-6)
        assert torch.allclose(v_mine.grad, v_theirs.grad, atol=1e-5)
        with torch.no_grad():
            assert torch.allclose(bernoulli_log_density(logits, value), ours)
            per_pixel = LogitBernoulli(logits=logits, validate_args=False).log_prob(value)
            assert torch.allclose(per_pixel.sum(-1), ref, rtol=1e-6, atol=1e-3)
    l = torch.randn(3, 5, dtype=torch.double, requires_grad=True)
    x = torch.rand(3, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(bernoulli_log_density, (l, x))
    assert torch.autograd.gradgradcheck(bernoulli_log_density, (l, x))


def test_the_kernels_give_torchs_gradients_under_pyros_provenance_tracking():
    """``TraceGraph_ELBO`` (``elbo=score``) wraps sampled z in Pyro's ``ProvenanceTensor``: a
    softplus decoder and the Bernoulli pixels must hand every layer torch's own gradient (a
    custom autograd node on the subclass left the decoder's first layer without one)."""
    from aevb.inference.objectives import build_objective
    from aevb.models import VAE, Batch

    torch.manual_seed(0)
    model = VAE(z_dim=4, hidden_sizes=[16], activation="softplus")
    x = torch.rand(6, 1, 28, 28).bernoulli()

    def grads():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        build_objective("score", 1).differentiable_loss(
            model.model, model.guide, Batch(x, index=torch.arange(6), num_data=60)).backward()
        return [p.grad.clone() for p in model.parameters()]

    ours = grads()
    for net in (model.encoder, model.decoder):  # torch's softplus in place of aevb's
        for i, layer in enumerate(net.net):
            if isinstance(layer, torch.nn.Softplus):
                net.net[i] = torch.nn.Softplus()
    theirs = grads()
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_concat_linear_equals_a_linear_layer_on_the_broadcast_concatenation():
    """M2's q(z|x,y) under enumeration: x (M, 784-like) and one-hot y (C, 1, C) give the same
    values and gradients as concatenating the broadcast inputs first."""
    from aevb.models.networks import ConcatLinear, MLPNet, flatten_inputs

    torch.manual_seed(0)
    layer = ConcatLinear([6, 3], 5)
    x = torch.randn(4, 6, requires_grad=True)
    y = torch.eye(3).reshape(3, 1, 3)
    out = layer([x, y])
    ref = torch.nn.functional.linear(flatten_inputs([x, y], [(6,), (3,)]), layer.weight, layer.bias)
    assert out.shape == (3, 4, 5)
    assert torch.allclose(out, ref, atol=1e-6)
    g = torch.randn(3, 4, 5)
    grads = torch.autograd.grad(out, [x, layer.weight, layer.bias], g)
    ref_grads = torch.autograd.grad(ref, [x, layer.weight, layer.bias], g)
    for a, b in zip(grads, ref_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(layer(ref.new_ones(2, 9)), torch.nn.functional.linear(
        ref.new_ones(2, 9), layer.weight, layer.bias))  # one tensor: plain nn.Linear
    # an MLP network keeps nn.Linear's parameter names (old checkpoints load)
    net = MLPNet([(2, 3), (4,)], (7,), [5], "relu")
    assert set(net.state_dict()) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    with pytest.raises(ValueError, match="do not add up"):
        from aevb.models.networks import mlp
        mlp([10, 5], "relu", [4, 4])
