from __future__ import annotations

import pytest
from pydantic import ValidationError

from adapruner.config import Range, SearchJob, SearchSpace
from adapruner.search.space import decode, dims


def test_default_space_has_the_three_subspaces():
    names = {d.name for d in dims(SearchSpace())}
    assert {"source:builtin:pydoc", "source:builtin:jargon", "samples", "subset_seed"} <= names
    assert {"metric:taylor", "metric:wanda", "normalization"} <= names
    assert {"attn_share", "depth_slope"} <= names
    assert "aggregation" not in names and "protect_first" not in names  # fixed by default


def test_fixed_dimensions_are_not_searched_but_applied():
    space = SearchSpace(
        metrics=("wanda",),
        samples=Range(low=16, high=16),
        attn_share=Range(low=0.1, high=0.1),
        protect_first=Range(low=2, high=2),
        normalizations=("rank",),
    )
    names = {d.name for d in dims(space)}
    assert not names & {"samples", "attn_share", "protect_first", "normalization"}
    assert not any(n.startswith("metric:") for n in names)
    recipe = decode(space, {})
    assert recipe.mix == {"wanda": 1.0} and recipe.samples == 16 and recipe.attn_share == 0.1
    assert recipe.protect_first == 2 and recipe.normalization == "rank"
    config = recipe.prune_config(ratio=0.2, targets=("heads", "channels"))
    assert config.allocation == "protected" and config.protect_first == 2 and config.protect_last == 0


def test_weights_are_normalised_to_a_simplex():
    space = SearchSpace()
    params = {"metric:bip": 0, "metric:taylor": 0.5, "metric:wanda": 1.5, "metric:flap": 0, "metric:l2": 0, "metric:taylor_vector": 0}
    recipe = decode(space, params)
    assert recipe.mix["wanda"] == pytest.approx(0.75) and sum(recipe.mix.values()) == pytest.approx(1)
    zero = decode(space, {f"source:{s.label()}": 0.0 for s in space.sources})
    assert list(zero.source_weights.values()) == pytest.approx([1 / 3] * 3)


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"space": {"metrics": []}}, "metrics"),
        ({"space": {"metrics": ["magic"]}}, "unknown metric 'magic'"),
        ({"ratio": 1.5}, "ratio"),
        ({"space": {"sources": [{"kind": "builtin", "name": "wiki"}]}}, "unknown builtin corpus 'wiki'"),
        ({"space": {"samples": {"low": 4, "high": 500}}}, "samples"),
        ({"space": {"attn_share": {"low": 0.5, "high": 0.2}}}, "low 0.5 > high 0.2"),
        ({"search": {"trials": 0}}, "trials"),
        ({"evaluate": {"texts": [{"kind": "builtin", "name": "jargon", "split": "validation"}]}}, "evaluate.texts"),
        ({"space": {"seq_lens": [128, 4]}}, "seq_lens"),
        ({"space": {"seq_lens": []}}, "seq_lens"),
        (
            {"space": {"ratio": {"low": 0.1, "high": 0.3}}},
            "space.ratio: a searched ratio needs search.second_objective",
        ),
        ({"search": {"second_objective": "params"}}, "space.ratio: search.second_objective 'params'"),
        ({"space": {"ratio": {"low": 0.0, "high": 0.3}}, "search": {"second_objective": "latency"}}, "ratio: 0..0.3"),
        ({"search": {"second_cap": 0.5}}, "second_cap"),
        ({"search": {"second_objective": "flops"}}, "second_objective"),
    ],
)
def test_bad_space_names_the_field(payload, needle):
    with pytest.raises(ValidationError, match=needle):
        SearchJob.model_validate(payload)


def test_seq_len_is_a_choice_when_there_are_several():
    assert "seq_len" not in {d.name for d in dims(SearchSpace())}
    assert decode(SearchSpace(), {}).seq_len == 256
    space = SearchSpace(seq_lens=(128, 512, 128))
    (dim,) = [d for d in dims(space) if d.name == "seq_len"]
    assert dim.kind == "choice" and dim.choices == ("128", "512")
    assert decode(space, {"seq_len": dim.decode(1.0)}).seq_len == 512
    assert decode(space, {}).seq_len == 128


def test_a_searched_ratio_is_a_dimension_that_the_recipe_applies():
    job = SearchJob.model_validate(
        {"space": {"ratio": {"low": 0.1, "high": 0.4}}, "search": {"second_objective": "params"}}
    )
    assert "ratio" in {d.name for d in dims(job.space)}
    recipe = decode(job.space, {"ratio": 0.3})
    assert recipe.ratio == 0.3 and recipe.prune_config(ratio=job.ratio, targets=job.targets).ratio == 0.3
    fixed = decode(SearchSpace(), {})
    assert fixed.ratio is None and fixed.prune_config(ratio=0.2, targets=("channels",)).ratio == 0.2


def test_shape_constraints_reach_every_trial():
    """The search honours the width multiple and the uniform switch: every decoded recipe prunes with them."""
    from adapruner.prune import LayerShape, plan_widths

    space = SearchSpace(channel_multiple=32, uniform=True)
    assert "depth_slope" not in {d.name for d in dims(space)}  # uniform fixes the slope at 0
    config = decode(space, {"attn_share": 0.2}).prune_config(ratio=0.25, targets=("heads", "channels"))
    assert config.channel_multiple == 32 and config.uniform and config.depth_slope == 0
    shapes = [LayerShape(heads=3, head_params=294_912, channels=1536, channel_params=1728)] * 30
    plan = plan_widths(shapes, params_before=30 * (3 * 294_912 + 1536 * 1728), config=config)
    assert len({tuple(k.values()) for k in plan.keep}) == 1 and plan.keep[0]["channels"] % 32 == 0
    assert decode(SearchSpace(channel_multiple=16), {"depth_slope": 0.5}).prune_config(ratio=0.2, targets=("channels",)).channel_multiple == 16


def test_uniform_space_refuses_a_searched_slope():
    with pytest.raises(ValidationError, match="uniform: one width for every layer needs depth_slope"):
        SearchSpace(uniform=True, depth_slope=Range(low=-1, high=1))


def test_the_fixed_recipe_is_a_point_of_the_default_space_and_only_where_it_can_be_expressed():
    """``fixed_params`` gives the point that decodes to prune's default recipe (the search's first trial),
    and None for a space that cannot express it."""
    from adapruner.config import CalibrationConfig, CompensateConfig, ImportanceConfig
    from adapruner.search.space import fixed_params

    job = SearchJob()
    params = fixed_params(job)
    assert params is not None and set(params) == {d.name for d in dims(job.space)}
    recipe = decode(job.space, params)
    default_mix = ImportanceConfig().mix
    assert {k: w for k, w in recipe.mix.items() if w > 0} == {k: w / sum(default_mix.values()) for k, w in default_mix.items()}
    assert recipe.compensate == CompensateConfig().method and recipe.samples == CalibrationConfig().samples
    assert recipe.attn_share == 0.0 and recipe.depth_share == 0.0 and recipe.depth_slope == 0.0
    assert len(set(recipe.source_weights.values())) == 1
    others = [m for m in job.space.metrics if m not in default_mix]
    assert fixed_params(job.model_copy(update={"space": job.space.model_copy(update={"metrics": tuple(others)})})) is None
    no_zero = job.space.model_copy(update={"attn_share": Range(low=0.1, high=0.3)})
    assert fixed_params(job.model_copy(update={"space": no_zero})) is None
    only_none = job.space.model_copy(update={"compensators": ("none",)})
    assert fixed_params(job.model_copy(update={"space": only_none})) is None
