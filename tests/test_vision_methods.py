"""The contract every visual-token method keeps, and the math specific to each, on random tensors with
LLaVA-1.5's shapes (576 patches of CLIP-L/336: width 1024, keys 1024, CLIP projection 768).

Run: python -m pytest -q tests/test_vision_methods.py
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.neighbors import LocalOutlierFactor

import gistify
from gistify import Budget
from gistify.method import REGISTRY
from gistify.vision import Reduction, VisualContext
from gistify.vision.ops import cls_attention
from gistify.vision.pool import pooled_grid
from gistify.vision.recover import RecoverableCompression

N, D, DK, DT, DQ, M = 576, 1024, 1024, 768, 256, 12
GRID = (24, 24)

# Every vision method with the parameter sets the contract tests run it under (the text ones live in
# methods_params.py).
VISION_METHODS = {
    "random": [{"seed": 0}, {"seed": 7}],
    "pool": [{}],
    "fastv": [{}],
    "visionzip": [{}, {"contextual": 0.5}],
    "prumerge": [{}, {"normalize_merge": True, "neighbours": 8}],
    "tome": [{}, {"r": 40}],
    "recover": [{}, {"mode": "code"}, {"text_guidance": False, "normalize_merge": True}],
    "reinforce": [{}, {"query": "max", "merge": False}, {"query": "attention"}, {"query": "none", "k": 4}],
}
CASES = [(name, params) for name, sets in VISION_METHODS.items() for params in sets]
SELECTION = {"random", "fastv"}  # tokens are the kept originals, unchanged
MEANS = {"pool", "tome", "visionzip", "reinforce"}  # every output token is a weighted mean of its sources
PARTITIONS = {"tome", "visionzip"}  # the sources split the N tokens exactly


def make_qkx(seed: int = 0):
    """Last-layer queries and keys with [CLS] first (577 x 1024), the patch features X, the projected patches V
    and the question's text embedding t, as the reference code sees them."""
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(N + 1, DK, generator=g), torch.randn(N + 1, DK, generator=g)
    x, v, t = torch.randn(N, D, generator=g), torch.randn(N, DT, generator=g), torch.randn(DT, generator=g)
    return q, k, x, v, t


def make_context(seed: int = 0) -> VisualContext:
    q, k, x, v, t = make_qkx(seed)
    g = torch.Generator().manual_seed(seed + 1)
    return VisualContext(
        features=x,
        cls_attention=cls_attention(q, k),
        keys=k[1:],
        patch_text=v,
        text=t,
        llm_attention=torch.softmax(torch.randn(N, generator=g), 0),
        question_states=torch.randn(M, DQ, generator=g),
        visual_states=torch.randn(N, DQ, generator=g),
        grid=GRID,
    )


@pytest.fixture(scope="module")
def ctx() -> VisualContext:
    return make_context()


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread


def vision(name: str, **params):
    return gistify.get_method(name, kind="vision", **params)


# -- registry --------------------------------------------------------------------------------------------------


def test_every_vision_method_is_covered():
    assert set(gistify.methods("vision")) == set(VISION_METHODS)


def test_registry_keys_on_kind_and_name():
    assert isinstance(gistify.get_method("recover"), RecoverableCompression)
    assert gistify.get_method("random", kind="vision").kind == "vision"
    assert gistify.get_method("random").kind == "text"  # a plain name resolves to text first
    assert gistify.get_method("vision:random").kind == "vision"
    assert gistify.get_method("reinforce", kind="vision").kind == "vision"
    listed = gistify.methods()
    assert {"random", "reinforce", "vision:random", "vision:reinforce", "recover", "tome"} <= set(listed)
    assert all(REGISTRY[name].description() == desc for name, desc in listed.items())  # every id resolves
    with pytest.raises(ValueError, match="'recover' reduces vision inputs; known text methods: random"):
        gistify.get_method("recover", kind="text")
    with pytest.raises(ValueError, match="unknown method 'nope'; known vision methods: fastv, pool"):
        gistify.get_method("nope", kind="vision")
    with pytest.raises(ValueError, match="has no parameter colour"):
        gistify.get_method("tome", colour=1)


# -- the contract ----------------------------------------------------------------------------------------------


def assert_contract(name: str, ctx: VisualContext, red: Reduction, target: int | None):
    kept, k = red.kept, len(red.kept)
    assert kept.dtype == torch.long and bool((kept[1:] > kept[:-1]).all()) and red.n_in == N
    assert red.tokens.shape[1] == D and red.tokens.dtype == ctx.features.dtype
    if target is not None:
        if name == "pool":
            assert red.n_out == math.prod(pooled_grid(*GRID, target)) <= target
        else:
            assert red.n_out == target
    assert len(red.sources) == red.n_out
    for i, src in enumerate(red.sources):
        assert src.dtype == torch.long and len(src) and len(set(src.tolist())) == len(src)
        assert 0 <= int(src.min()) and int(src.max()) < N
        if i < k:
            assert src[0] == kept[i]  # a slot's own token comes first
    if name in SELECTION:
        assert torch.equal(red.tokens, ctx.features[kept]) and red.n_out == k
    if name in MEANS:  # inside the per-dimension range of what it stands for
        for tok, src in zip(red.tokens, red.sources):
            members = ctx.features[src]
            assert bool((tok >= members.min(0).values - 1e-5).all() and (tok <= members.max(0).values + 1e-5).all())
    if name in PARTITIONS and red.info.get("contextual", 1):  # VisionZip at 1 token has no contextual one
        assert sorted(torch.cat(red.sources).tolist()) == list(range(N))


@pytest.mark.parametrize("name,params", CASES)
@pytest.mark.parametrize("keep", [0.5, 0.1, 0.05])
def test_budget_order_and_sources(ctx, name, params, keep):
    budget = Budget(keep=keep)
    red = vision(name, **params).reduce(ctx, budget)
    assert_contract(name, ctx, red, budget.target(N))
    assert red.budget_chosen is None


@pytest.mark.parametrize("name,params", CASES)
def test_token_count_budget(ctx, name, params):
    for tokens in (1, 2, 64, N - 1):
        red = vision(name, **params).reduce(ctx, Budget(tokens=tokens))
        assert_contract(name, ctx, red, tokens)


@pytest.mark.parametrize("name,params", CASES)
def test_keep_everything_is_the_identity(ctx, name, params):
    for budget in (Budget(keep=1.0), Budget(tokens=10**6)):
        red = vision(name, **params).reduce(ctx, budget)
        assert torch.equal(red.kept, torch.arange(N)) and red.tokens is ctx.features and red.grid == GRID
        assert [s.tolist() for s in red.sources] == [[i] for i in range(N)]


@pytest.mark.parametrize("name,params", CASES)
def test_deterministic_and_inputs_untouched(name, params):
    ctx = make_context(3)
    before = {f: getattr(ctx, f).clone() for f in ("features", "cls_attention", "keys", "patch_text", "text")}
    a = vision(name, **params).reduce(ctx, Budget(keep=0.1))
    b = vision(name, **params).reduce(make_context(3), Budget(keep=0.1))
    assert torch.equal(a.kept, b.kept) and torch.equal(a.tokens, b.tokens)
    assert all(torch.equal(getattr(ctx, f), v) for f, v in before.items())


@pytest.mark.parametrize("name,params", CASES)
def test_half_precision_in_half_precision_out(ctx, name, params):
    fields = ("features", "cls_attention", "keys", "patch_text", "text", "question_states", "visual_states")
    half = VisualContext(**{**vars(ctx), **{f: getattr(ctx, f).half() for f in fields}})
    red = vision(name, **params).reduce(half, Budget(keep=0.1))
    assert red.tokens.dtype == torch.float16 and bool(torch.isfinite(red.tokens).all())
    assert red.kept.device.type == "cpu" and all(s.device.type == "cpu" for s in red.sources)


def test_random_seed_changes_selection(ctx):
    a, b = (vision("random", seed=s).reduce(ctx, Budget(keep=0.1)) for s in (1, 2))
    assert not torch.equal(a.kept, b.kept)


@pytest.mark.parametrize("name", ["recover", "prumerge", "reinforce"])
def test_dynamic_budget_is_reported(ctx, name):
    red = vision(name).reduce(ctx)
    assert red.budget_chosen == red.n_out and 0 < red.n_out < N
    assert_contract(name, ctx, red, None)


@pytest.mark.parametrize("name", ["random", "pool", "fastv", "visionzip", "tome"])
def test_fixed_budget_methods_need_a_budget(ctx, name):
    with pytest.raises(ValueError, match=f"{name} has no budget rule of its own"):
        vision(name).reduce(ctx)
    with pytest.raises(TypeError, match="gistify.Budget"):
        vision(name).reduce(ctx, 0.5)


@pytest.mark.parametrize("name,params", CASES)
def test_missing_context_fields_are_named(ctx, name, params):
    method = vision(name, **params)
    for field in method.required():
        partial = VisualContext(**{**vars(ctx), field: None})
        with pytest.raises(ValueError, match=rf"{name} needs VisualContext\.{field}: "):
            method.reduce(partial, Budget(keep=0.1))


@pytest.mark.parametrize(
    "name,params,field",
    [
        ("random", {"seed": -1}, "random.seed"),
        ("random", {"seed": "x"}, "random.seed"),
        ("fastv", {"layer": 1.5}, "fastv.layer"),
        ("visionzip", {"contextual": 1.0}, "visionzip.contextual"),
        ("prumerge", {"neighbours": 0}, "prumerge.neighbours"),
        ("prumerge", {"iqr_scale": -1}, "prumerge.iqr_scale"),
        ("tome", {"r": 0}, "tome.r"),
        ("recover", {"mode": "both"}, "recover.mode"),
        ("recover", {"lof_neighbors": (20, 20)}, "recover.lof_neighbors"),
        ("recover", {"mode": "code", "normalize_merge": True}, "recover.normalize_merge"),
        ("recover", {"text_guidance": 1}, "recover.text_guidance"),
        ("reinforce", {"alpha": 1.0}, "reinforce.alpha"),
        ("reinforce", {"query": "question"}, "reinforce.query"),
        ("reinforce", {"weights": (1.0, 0.5, 0.5)}, "reinforce.weights"),
        ("reinforce", {"threshold": 0}, "reinforce.threshold"),
    ],
)
def test_bad_hyperparameters_name_the_field(name, params, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        vision(name, **params)


def test_bad_context_names_the_field():
    x = torch.randn(N, D)
    for kw, field in [
        ({"features": x[0]}, "features"),
        ({"cls_attention": torch.rand(N - 1)}, "cls_attention"),
        ({"keys": torch.randn(N, 1, 2)}, "keys"),
        ({"grid": (24, 25)}, "grid"),
        ({"patch_text": torch.randn(N, DT), "text": torch.randn(DK)}, "text"),
        ({"question_states": torch.randn(M, 8), "visual_states": torch.randn(N, 16)}, "question_states"),
    ]:
        with pytest.raises(ValueError, match=rf"VisualContext\.{field}"):
            VisualContext(**{"features": x, **kw})
    ctx = VisualContext(x, question_states=torch.randn(M, 8))  # no visual_states: features are the nodes
    with pytest.raises(ValueError, match="visual_states in the question's space"):
        vision("reinforce").reduce(ctx, Budget(keep=0.1))


# -- recover ---------------------------------------------------------------------------------------------------


def reference_recover(q, k, x, v, t):
    """The released Recoverable Compression, transcribed step by step from docs/methods.md §2.2 (bugs included),
    independently of gistify.vision: returns the kept indices and the output tokens."""
    n, c = x.shape
    a = torch.softmax(q @ k.T / math.sqrt(c), dim=-1)[0, 1:]  # step 1: single head, full width
    s = (F.normalize(v, dim=1) @ F.normalize(t, dim=0)) / math.sqrt(v.shape[1])  # step 2

    def ratio(values, n_neighbors):  # step 3: the LOF outlier fraction
        data = values.numpy().astype(np.float32).reshape(-1, 1)
        pred = LocalOutlierFactor(n_neighbors=n_neighbors, contamination="auto").fit_predict(data)
        return np.sum(pred == -1) / len(pred)

    k_v = int(n * ratio(a, 20))
    i_v = torch.topk(a, k_v).indices
    masked = s.clone()
    masked[i_v] = s.min()  # step 4: kept tokens cannot be chosen again; LOF sees the ties
    k_t = int((n - k_v) * ratio(masked, 20))
    i_t = torch.topk(masked, k_t).indices
    keep = sorted(set(i_v.tolist()) | set(i_t.tolist()))
    rest = [j for j in range(n) if j not in set(keep)]  # step 5
    a_rest = a[rest]
    m = int(c * ratio(a_rest, 10))  # C = 1024: the feature width
    centres = torch.topk(a_rest, m).indices.tolist()  # positions inside R, descending attention
    keys = k[1:]  # all N patch keys, indexed with positions inside R (the misalignment)
    non_centres = [j for j in range(len(rest)) if j not in set(centres)]
    out = [x[keep]]
    for p, i in enumerate(centres):
        candidates = centres[:p] + centres[p + 1 :] + non_centres
        ki = F.normalize(keys[i], dim=0)
        score = [float(ki @ F.normalize(keys[j], dim=0)) + 50 * float(s[rest[j]]) for j in candidates]
        best = sorted(range(len(candidates)), key=lambda u: -score[u])[:32]
        merged = x[rest[i]].clone()
        for u in best:
            merged += a_rest[candidates[u]] * x[rest[candidates[u]]]
        out.append(merged[None])
    if m:
        out.append(sum(a_rest[j] * x[rest[j]] for j in non_centres)[None])
    return keep, torch.cat(out), (k_v, k_t, m)


@pytest.mark.parametrize("seed", [0, 1])
def test_recover_code_mode_matches_the_reference(seed):
    q, k, x, v, t = make_qkx(seed)
    keep, tokens, (k_v, k_t, m) = reference_recover(q, k, x, v, t)
    assert k_v > 0 and k_t > 0 and m > 0  # every stage is exercised
    ctx = VisualContext(x, cls_attention=cls_attention(q, k), keys=k[1:], patch_text=v, text=t)
    red = vision("recover", mode="code").reduce(ctx)
    assert red.kept.tolist() == keep and (red.info["k_v"], red.info["k_t"], red.info["m"]) == (k_v, k_t, m)
    torch.testing.assert_close(red.tokens, tokens, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["paper", "code"])
def test_recover_counts(ctx, mode):
    method = vision("recover", mode=mode)
    red = method.reduce(ctx)
    info = red.info
    assert info["m"] > 0 and red.n_out == info["k_v"] + info["k_t"] + info["m"] + 1 == red.budget_chosen
    assert len(red.kept) == info["k_v"] + info["k_t"]
    assert torch.equal(red.tokens[: len(red.kept)], ctx.features[red.kept])  # kept tokens are untouched
    assert sorted(torch.cat(red.sources).unique().tolist()) == list(range(N))  # the extra token takes the rest
    for k in (1, 2, 3, 29, 58, 288, 575):
        fixed = method.reduce(ctx, Budget(tokens=k))
        i = fixed.info
        assert fixed.n_out == k == i["k_v"] + i["k_t"] + i["m"] + i["extra"]


@pytest.mark.parametrize("mode", ["paper", "code"])
def test_recover_text_share_gives_the_question_its_share_first(ctx, mode):
    for share, k in ((0.0, 29), (0.5, 29), (1.0, 29), (0.75, 3), (0.5, 288)):
        red = vision("recover", mode=mode, text_share=share).reduce(ctx, Budget(tokens=k))
        i = red.info
        assert i["k_t"] == round(k * share) and red.n_out == k == i["k_v"] + i["k_t"] + i["m"] + i["extra"]
        s = vision("recover").text_scores(ctx)
        visual = set(ctx.cls_attention.topk(i["k_v"]).indices.tolist())
        text = [j for j in red.kept.tolist() if j not in visual]
        assert len(text) == i["k_t"]  # the question's picks: the best text scores outside the visual picks
        if mode == "paper" and text:
            others = torch.tensor(sorted(set(range(N)) - visual - set(text)))
            assert s[text].min() >= s[others].max()
    with pytest.raises(ValueError, match="text_share"):
        vision("recover", text_share=1.5)
    with pytest.raises(ValueError, match="text_share"):
        vision("recover", text_share=0.5, text_guidance=False)


def test_recover_paper_mode_fixes_the_centre_count(ctx):
    code, paper = (vision("recover", mode=mode).reduce(ctx) for mode in ("code", "paper"))
    assert code.info["k_v"] == paper.info["k_v"]
    assert code.info["m"] > paper.info["m"]  # 1024 * ratio against n_R * ratio


def guided_context(seed: int = 1) -> tuple[VisualContext, set[int]]:
    """A block of 12 patches that the question's text embedding points at and [CLS] attention ignores, with
    20 attention spikes elsewhere."""
    g = torch.Generator().manual_seed(seed)
    h, w = GRID
    block = torch.tensor([r * w + c for r in range(14, 17) for c in range(3, 7)])
    a = torch.rand(N, generator=g) * 1e-3 + 1e-3
    spikes = torch.randperm(N, generator=g)
    spikes = spikes[~torch.isin(spikes, block)][:20]
    a[spikes] = 0.02 + 0.02 * torch.rand(20, generator=g)
    a[block] = 2e-4 * (1 + torch.rand(len(block), generator=g))
    t = torch.randn(DT, generator=g)
    v = torch.randn(N, DT, generator=g)
    v[block] = t * torch.linspace(0.4, 0.8, len(block))[:, None] + 0.02 * torch.randn(len(block), DT, generator=g)
    x, keys = torch.randn(N, D, generator=g), torch.randn(N, DK, generator=g)
    ctx = VisualContext(x, cls_attention=a / a.sum(), keys=keys, patch_text=v, text=t, grid=GRID)
    return ctx, set(block.tolist())


@pytest.mark.parametrize("budget", [None, Budget(keep=0.1)])
def test_question_guidance_recovers_what_cls_attention_ignores(budget):
    ctx, block = guided_context()
    for mode in ("paper", "code"):
        assert block <= set(vision("recover", mode=mode).reduce(ctx, budget).kept.tolist())
    assert not block & set(vision("recover", text_guidance=False).reduce(ctx, budget).kept.tolist())
    assert not block & set(vision("prumerge").reduce(ctx, budget).kept.tolist())
    if budget is not None:
        assert not block & set(vision("visionzip").reduce(ctx, budget).kept.tolist())


# -- the others ------------------------------------------------------------------------------------------------


def test_prumerge_keeps_the_iqr_outliers_and_one_extra_token(ctx):
    a = ctx.cls_attention.numpy()
    q1, q3 = np.percentile(a, [25, 75])
    outliers = np.flatnonzero(a > q3 + 1.5 * (q3 - q1))
    red = vision("prumerge").reduce(ctx)
    assert red.kept.tolist() == outliers.tolist() and red.n_out == len(outliers) + 1
    others = sorted(set(range(N)) - set(outliers.tolist()))
    torch.testing.assert_close(red.tokens[-1], ctx.cls_attention[others] @ ctx.features[others])


@pytest.mark.parametrize("r", [None, 7])
def test_tome_preserves_the_size_weighted_mean(ctx, r):
    red = vision("tome", r=r).reduce(ctx, Budget(keep=0.1))
    sizes = torch.tensor([len(s) for s in red.sources], dtype=torch.float32)
    torch.testing.assert_close(sizes @ red.tokens, ctx.features.sum(0), atol=1e-3, rtol=1e-5)
    for tok, src in zip(red.tokens, red.sources):  # each output is exactly the mean of what it stands for
        torch.testing.assert_close(tok, ctx.features[src].mean(0), atol=1e-5, rtol=1e-5)


def test_tome_merges_similar_tokens_first():
    x = torch.randn(8, 4)
    keys = torch.eye(8)
    keys[2] = keys[3] = torch.ones(8)  # 2 and 3 share a key: the one pair to merge
    red = vision("tome").reduce(VisualContext(x, keys=keys), Budget(tokens=7))
    assert red.kept.tolist() == [0, 1, 3, 4, 5, 6, 7] and red.sources[2].tolist() == [3, 2]
    torch.testing.assert_close(red.tokens[2], (x[2] + x[3]) / 2)


def test_pool_keeps_a_coarser_grid(ctx):
    red = vision("pool").reduce(ctx, Budget(tokens=144))  # 24 x 24 -> 12 x 12: exact 2 x 2 windows
    assert red.grid == (12, 12)
    grid = ctx.features.reshape(12, 2, 12, 2, D).mean(dim=(1, 3)).reshape(144, D)
    torch.testing.assert_close(red.tokens, grid)
    assert red.sources[0].tolist() == [0, 1, 24, 25] and red.sources[13].tolist() == [50, 51, 74, 75]
    assert pooled_grid(24, 24, 58) == (8, 7) and pooled_grid(24, 24, 29) == (5, 5) and pooled_grid(2, 8, 4) == (1, 4)


def test_visionzip_splits_the_budget():
    ctx = make_context()
    red = vision("visionzip").reduce(ctx, Budget(tokens=64))
    assert red.info == {"dominant": 54, "contextual": 10} and len(red.kept) == 54
    assert set(red.kept.tolist()) == set(ctx.cls_attention.topk(54).indices.tolist())
    assert torch.equal(red.tokens[:54], ctx.features[red.kept])


def test_reinforce_keeps_what_the_question_points_at():
    ctx = make_context()
    block = torch.arange(100, 112)
    visual = ctx.visual_states.clone()
    visual[block] = ctx.question_states.mean(0) + 0.1 * torch.randn(len(block), DQ)
    ctx = VisualContext(ctx.features, question_states=ctx.question_states, visual_states=visual, grid=GRID)
    red = vision("reinforce", merge=False).reduce(ctx, Budget(keep=0.05))
    assert set(block.tolist()) <= set(red.kept.tolist())
    merged = vision("reinforce").reduce(ctx, Budget(keep=0.05))
    assert torch.equal(merged.kept, red.kept)
    covered = torch.cat(merged.sources)
    assert len(covered) == len(covered.unique()) == merged.info["merged"] + len(merged.kept)
