"""The online ``auto`` rule on the real loop: it measures both heads, moves K* away from the
preset, and still decodes the dense tokens."""

import dataclasses

from app.engine.recalibrate import OnlineRule
from app.engine.session import Session


def test_online_rule_moves_k_star_and_stays_exact(engine, workload):
    by_id = {r.id: r for r in workload}
    reqs = [dataclasses.replace(by_id[i], max_tokens=8) for i in ("ex-review", "json-object")]
    dense = [engine.decode(r, plan="dense").tokens for r in reqs]
    rule = OnlineRule(engine.config.d, engine.config.vocab, "h100", 1, 2)
    session = Session(engine, rule=rule)  # the recalibrating policy runs it; the engine is as was
    got = [session.decode(r).tokens for r in reqs]
    info = rule.to_dict()
    assert got == dense
    assert engine.rule.k_star == engine.rule.to_dict()["k_star"]  # untouched
    assert info["sparse_samples"] >= 2 and info["dense_samples"] >= 2
    assert info["k_star"] != info["preset_k_star"]
