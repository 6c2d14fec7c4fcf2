"""The router registry is the one list every consumer reads."""

import numpy as np
import pytest

from app.harness import DRIFT_ROUTERS as HARNESS_DRIFT
from app.model import PLAN_NAMES, Scenario
from app.router import FEATURES, REGISTRY, ROUTERS, make_router, router_params
from app.router.registry import LEARNERS, spec
from app.widgets.router import ROUTER_COLORS, ROUTER_LABELS
from app.widgets.state import ScenarioState


def test_every_consumer_lists_the_registry_routers():
    assert set(ROUTERS) == set(REGISTRY)
    assert list(ScenarioState.param.router.objects) == list(LEARNERS)
    assert list(ScenarioState.param.compare.objects) == list(LEARNERS)
    assert list(ROUTER_LABELS) == list(LEARNERS) == list(ROUTER_COLORS)
    assert set(HARNESS_DRIFT) <= set(LEARNERS) and "linucb" in HARNESS_DRIFT


@pytest.mark.parametrize("name", LEARNERS)
def test_each_learner_builds_from_a_scenario_and_plays_a_legal_arm(name):
    s = Scenario(horizon=400, tau=0.3)
    params = router_params(name, s, alpha=0.2)
    router = make_router(name, len(PLAN_NAMES), len(FEATURES), seed=0, **params)
    assert isinstance(router, REGISTRY[name].cls)
    x = np.linspace(0.1, 0.9, len(FEATURES))
    assert 0 <= router.select(x) < len(PLAN_NAMES)


def test_exp4_is_the_bandit_experts_and_says_so():
    entry = spec("experts-exp4")
    assert entry.fixed == {"feedback": "bandit"} and "Exp4" in entry.label
    assert make_router("experts-exp4", 5, 7, horizon=10).feedback == "bandit"
    assert make_router("experts-hedge", 5, 7, horizon=10).feedback == "full"


def test_unknown_names_are_refused_with_the_options():
    with pytest.raises(ValueError, match="'name' parameter must be one of 'linucb'"):
        spec("experts-exp3")
    with pytest.raises(ValueError, match="'router' parameter"):
        router_params("oracle", Scenario())
