"""The declarative spec: compilation, equivalence with hand-written models, enumeration, errors."""

import math
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from torch import nn

from aevb.models import VAE, Batch
from aevb.models.networks import register_network
from aevb.models.spec import ModelSpec, SpecError, compile_spec, load_spec, topological_order
from aevb.models.spec.graph import CycleError
from aevb.models.spec.schema import (
    LatentSpec,
    NetworkSpec,
    ObservedSpec,
    PosteriorSpec,
)

SPECS = Path(__file__).resolve().parents[1] / "configs" / "specs"


def traces(model, batch):
    guide = poutine.trace(model.guide).get_trace(batch)
    joint = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(batch)
    return guide, joint


def sample_sites(trace):
    return {name: site for name, site in trace.nodes.items()
            if site["type"] == "sample" and name != "data"}


# expected (site -> value shape per datapoint) in the guide and the model, for a batch of 4
EXPECTED = {
    "vae": ({"z": (50,)}, {"z": (50,), "x": (1, 28, 28)}),
    "cvae": ({"z": (50,)}, {"z": (50,), "x": (1, 28, 28)}),
    "dlgm2": ({"z1": (100,), "z2": (50,)}, {"z2": (50,), "z1": (100,), "x": (1, 28, 28)}),
    "m2": ({"z": (50,), "y": ()}, {"y": (), "z": (50,), "x": (1, 28, 28)}),
    "gmvae": ({"c": (), "z": (10,)}, {"c": (), "z": (10,), "x": (1, 28, 28)}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_shipped_spec_compiles_with_expected_sites_shapes_and_plates(name):
    model = compile_spec(SPECS / f"{name}.yaml")
    x = torch.bernoulli(torch.rand(4, 1, 28, 28))
    guide, joint = traces(model, Batch(x, None if model.labels == "optional" else torch.arange(4)))
    want_guide, want_model = EXPECTED[name]
    for trace, want in ((guide, want_guide), (joint, want_model)):
        sites = sample_sites(trace)
        assert set(sites) == set(want)
        for site_name, shape in want.items():
            site = sites[site_name]
            assert tuple(site["value"].shape) == (4, *shape), site_name
            assert [f.name for f in site["cond_indep_stack"]] == ["data"]
    order = list(sample_sites(joint))  # the model runs in topological order
    for name_, cond in model.priors.items():
        assert all(order.index(p) < order.index(name_) for p in cond.parents if p in order)
    assert model.observed_sites == ("x",)
    assert sum(p.numel() for p in model.parameters()) > 0  # networks are registered modules


def test_spec_dataclasses_and_yaml_are_the_same_model():
    spec = ModelSpec(
        name="vae",
        networks={"encoder": NetworkSpec(hidden=[400]), "decoder": NetworkSpec(hidden=[400])},
        latents={"z": LatentSpec(shape=[50], posterior=PosteriorSpec(inputs=["x"], network="encoder",
                                                                     family="diag"))},
        observed={"x": ObservedSpec(likelihood="bernoulli", parents=["z"], network="decoder")},
    )
    assert load_spec(SPECS / "vae.yaml").latents == spec.latents
    assert load_spec(SPECS / "vae.yaml").observed == spec.observed
    a, b = compile_spec(spec), compile_spec(SPECS / "vae.yaml")
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]


def copy_parameters(src: nn.Module, dst: nn.Module) -> None:
    src_params, dst_params = list(src.parameters()), list(dst.parameters())
    assert [p.shape for p in src_params] == [p.shape for p in dst_params]
    with torch.no_grad():
        for s, d in zip(src_params, dst_params, strict=True):
            d.copy_(s)


def test_vae_spec_and_hand_written_vae_with_identical_weights_give_identical_elbos():
    hand = VAE(z_dim=50, hidden_sizes=[400])
    spec = compile_spec(SPECS / "vae.yaml")
    copy_parameters(hand, spec)
    batch = Batch(torch.bernoulli(torch.rand(16, 1, 28, 28)), torch.arange(16) % 10)
    values = []
    for m in (hand, spec):
        pyro.set_rng_seed(3)
        elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
        values.append(elbo.loss(m.model, m.guide, batch))
    assert values[0] == values[1]
    # (the spec's helpers run without autograd, where tanh takes its sigmoid form: ~1e-7 apart)
    assert torch.allclose(hand.reconstruct(batch.x), spec.reconstruct(batch.x), atol=1e-6)
    assert torch.allclose(hand.encode(batch.x), spec.encode(batch.x), atol=1e-6)


def m2_tiny():
    spec = load_spec(SPECS / "m2.yaml")
    spec.sometimes_observed["y"].num_classes = 3
    spec.latents["z"].shape = [2]
    for net in spec.networks.values():
        net.hidden = [5]
    return compile_spec(spec, x_shape=(1, 2, 2))


def test_m2_observes_labels_when_given_and_enumerates_them_when_not():
    model = m2_tiny()
    x = torch.bernoulli(torch.rand(3, 1, 2, 2))
    guide, joint = traces(model, Batch(x, torch.tensor([0, 2, 1])))
    assert joint.nodes["y"]["is_observed"] and "y" not in sample_sites(guide)
    assert "aux_y" in guide.nodes  # the classification term, a factor in the guide
    guide, joint = traces(model, Batch(x))
    assert guide.nodes["y"]["infer"] == {"enumerate": "parallel"}
    assert not joint.nodes["y"]["is_observed"]
    assert model.labels == "optional" and model.enumerated_sites == ("y",)


def test_m2_enumerated_elbo_equals_the_sum_over_y_by_hand():
    model = m2_tiny()
    x = torch.bernoulli(torch.rand(4, 1, 2, 2))
    pyro.set_rng_seed(1)
    elbo = -TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, Batch(x))

    # by hand: sum_y q(y|x) [log p(x|y,z_y) + log p(y) + log p(z_y) - log q(z_y|x,y) - log q(y|x)]
    # with z_y drawn, for every y at once, from the same random numbers
    pyro.set_rng_seed(1)
    k, nets = 3, model.networks
    with torch.no_grad():
        flat = x.flatten(1)
        log_qy = torch.log_softmax(nets["classifier"](x), -1)                 # (M, K)
        y = torch.eye(k)[:, None, :].expand(k, 4, k)                         # (K, M, K)
        loc, raw = nets["encoder"](x, y).chunk(2, -1)                         # (K, M, 2)
        scale = torch.nn.functional.softplus(raw) + 1e-5
        z = loc + scale * torch.randn(k, 4, 2)
        log_q_z = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        log_p_z = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        logits = nets["decoder"](y, z).reshape(k, 4, -1)
        log_p_x = torch.distributions.Bernoulli(logits=logits).log_prob(flat).sum(-1)
        inner = log_p_x + log_p_z - log_q_z - math.log(k) - log_qy.T       # (K, M)
        by_hand = (log_qy.T.exp() * inner).sum()
    assert elbo == pytest.approx(float(by_hand), rel=1e-5, abs=1e-4)


def test_m2_labelled_objective_adds_the_classification_term():
    model = m2_tiny()
    x, y = torch.bernoulli(torch.rand(4, 1, 2, 2)), torch.tensor([0, 1, 2, 1])
    batch = Batch(x, y)
    pyro.set_rng_seed(2)
    with_aux = -Trace_ELBO().loss(model.model, model.guide, batch)
    model.posteriors["y"].aux_weight = 0.0
    pyro.set_rng_seed(2)
    without = -Trace_ELBO().loss(model.model, model.guide, batch)
    with torch.no_grad():
        log_q = torch.log_softmax(model.networks["classifier"](x), -1).gather(1, y[:, None]).sum()
    assert with_aux - without == pytest.approx(0.1 * float(log_q), rel=1e-5)


def test_plain_pyro_gmvae_and_its_spec_with_identical_weights_give_identical_elbos():
    from aevb.models.loading import resolve_model

    cls = resolve_model(str(SPECS.parents[1] / "examples" / "gmvae.py") + ":GMVAE")
    hand = cls(z_dim=10, num_components=10, hidden=400)
    spec = compile_spec(SPECS / "gmvae.yaml")
    copy_parameters(hand, spec)
    batch = Batch(torch.bernoulli(torch.rand(8, 1, 28, 28)))
    values = []
    for m in (hand, spec):
        pyro.set_rng_seed(5)
        values.append(TraceEnum_ELBO(max_plate_nesting=1).loss(m.model, m.guide, batch))
    assert values[0] == pytest.approx(values[1], rel=1e-6)


def test_topological_order_and_cycles():
    assert topological_order(["x", "z1", "z2"], {"x": ["z1"], "z1": ["z2"]}) == ["z2", "z1", "x"]
    with pytest.raises(CycleError) as info:
        topological_order(["a", "b", "c"], {"a": ["b"], "b": ["c"], "c": ["a"]})
    assert info.value.cycle == ["a", "b", "c", "a"]


# -- every error names the key and the fix --------------------------------------------------------
def vae_spec() -> dict:
    return {
        "networks": {"enc": {"hidden": [8]}, "dec": {"hidden": [8]}},
        "latents": {"z": {"shape": [2], "prior": "standard",
                          "posterior": {"inputs": ["x"], "network": "enc"}}},
        "observed": {"x": {"likelihood": "bernoulli", "parents": ["z"], "network": "dec"}},
    }


@register_network("wrong_size_for_tests")
class WrongSize(nn.Module):
    def __init__(self, in_shapes, out_shape, hidden, activation):
        super().__init__()
        self.linear = nn.Linear(sum(math.prod(s) for s in in_shapes), 10)

    def forward(self, *inputs):
        return self.linear(inputs[0])


def edit(path: str, value):
    def apply(spec: dict):
        *parents, last = path.split(".")
        node = spec
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            del node[last]
        else:
            node[last] = value
        return spec
    return apply


def two_layer_cycle(spec):
    spec["networks"]["p_z"] = {"hidden": [8]}
    spec["networks"]["q_w"] = {"hidden": [8]}
    spec["networks"]["p_w"] = {"hidden": [8]}
    spec["latents"]["z"]["prior"] = {"parents": ["w"], "network": "p_z"}
    spec["latents"]["w"] = {"shape": [2], "prior": {"parents": ["z"], "network": "p_w"},
                            "posterior": {"inputs": ["z"], "network": "q_w"}}
    return spec


def guide_cycle(spec):
    spec["networks"]["q_w"] = {"hidden": [8]}
    spec["latents"]["z"]["posterior"]["inputs"] = ["x", "w"]
    spec["latents"]["w"] = {"shape": [2], "posterior": {"inputs": ["z"], "network": "q_w"}}
    return spec


ERRORS = {
    "model cycle": (two_layer_cycle, r"latents\.\w\.prior\.parents: the model has a cycle: "
                                     r"(z -> w -> z|w -> z -> w)"),
    "guide cycle": (guide_cycle, r"posterior\.inputs: the guide has a cycle: .*remove one"),
    "unknown variable": (edit("observed.x.parents", ["z", "h"]),
                         r"observed\.x\.parents: unknown variable 'h'; variables: x, z|"
                         r"observed\.x\.parents: unknown variable 'h'; variables: z, x"),
    "unknown network": (edit("latents.z.posterior.network", "encoder"),
                        r"latents\.z\.posterior\.network: unknown network 'encoder'; "
                        r"networks: enc, dec"),
    "unknown network type": (edit("networks.enc.type", "transformer"),
                             r"networks\.enc\.type: unknown network 'transformer'; valid networks:"),
    "data shape mismatch": (edit("observed.x.shape", [1, 14, 14]),
                            r"observed\.x\.shape: \[1, 14, 14\] does not match the data, whose "
                            r"values have shape \[1, 28, 28\]"),
    "network shape mismatch": (edit("networks.dec.type", "wrong_size_for_tests"),
                               r"networks\.dec: outputs shape \[10\] per datapoint, but p\(x\|\.\) "
                               r"needs \[1, 28, 28\]"),
    "unknown type": (edit("latents.z.type", "gamma"),
                     r"latents\.z\.type: unknown variable type 'gamma'; valid variable types: "
                     r"bernoulli, categorical, normal"),
    "unknown family": (edit("latents.z.posterior.family", "flow"),
                       r"latents\.z\.posterior\.family: unknown family 'flow'; valid families:"),
    "family for another type": (edit("latents.z.posterior.family", "categorical"),
                                r"family 'categorical' is for categorical variables but 'z' is "
                                r"normal; families for normal: diag, full, gaussian, iaf, lowrank, mixture, "
                                r"planar"),
    "unknown likelihood": (edit("observed.x.likelihood", "poisson"),
                           r"observed\.x\.likelihood: unknown likelihood 'poisson'"),
    "latent the guide misses": (edit("latents.z.posterior", None),
                                r"latents\.z\.posterior: missing: the guide does not cover 'z'"),
    "network used twice": (edit("observed.x.network", "enc"),
                           r"observed\.x\.network: network 'enc' already computes q\(z\|\.\)"),
    "unused network": (edit("networks.spare", {"hidden": [3]}),
                       r"networks\.spare: defined but used by no prior"),
    "unknown key": (edit("latents.z.posterior.netwrok", "enc"),
                    r"latents\.z\.posterior\.netwrok: unknown key 'netwrok'; valid keys here: "
                    r".*network"),
    "ill-typed value": (edit("latents.z.shape", "fifty"), r"latents\.z\.shape"),
    "enumerate a normal": (edit("latents.z.posterior.enumerate", True),
                           r"latents\.z\.posterior\.enumerate: normal variables cannot be "
                           r"enumerated"),
    "balance a latent": (edit("latents.z.posterior.balance_weight", 1.0),
                         r"latents\.z\.posterior\.balance_weight: needs a weight >= 0 on a "
                         r"sometimes_observed categorical variable with a standard prior"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_specs_are_refused_with_the_path_of_the_key(case):
    change, message = ERRORS[case]
    with pytest.raises(SpecError, match=message):
        compile_spec(change(vae_spec()))


def test_conv_networks_adapt_to_the_image_shape_and_refuse_tiny_images():
    spec = vae_spec()
    spec["networks"]["enc"]["type"] = "conv"
    spec["networks"]["dec"]["type"] = "conv"
    for shape in ((1, 28, 28), (3, 32, 32), (1, 28, 20), (3, 15, 9)):
        model = compile_spec(spec, x_shape=shape)
        torch.manual_seed(0)
        x = torch.rand(2, *shape)
        assert model.reconstruct(x).shape == (2, *shape)
    with pytest.raises(SpecError, match=r"networks\.enc: cannot build it for q\(z\|\.\): network "
                                        r"type conv needs images of at least 4x4 pixels"):
        compile_spec(spec, x_shape=(1, 3, 3))


def test_missing_spec_file_is_named():
    with pytest.raises(SpecError, match="no_such.yaml' does not exist"):
        load_spec("no_such.yaml")


def test_class_elbos_are_the_labelled_elbo_without_the_classification_term():
    from aevb.inference.semisupervised import class_elbos

    model = m2_tiny()
    x = torch.bernoulli(torch.rand(4, 1, 2, 2))
    pyro.set_rng_seed(3)
    scores = class_elbos(model, x, num_classes=3)  # draws z for class 0, then 1, then 2
    model.posteriors["y"].aux_weight = 0.0
    pyro.set_rng_seed(3)
    for c in range(3):
        elbo = -Trace_ELBO().loss(model.model, model.guide, Batch(x, torch.full((4,), c)))
        assert float(scores[:, c].sum()) == pytest.approx(elbo, rel=1e-5)
