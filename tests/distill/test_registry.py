"""The method registry: every method the API accepts has an objective in the engine, and the
engine has no objective for a method the API does not know."""

from __future__ import annotations

import typing

from app.contract.methods import METHODS, Method
from app.contract.spec import JobSpec
from worker.distill.objectives import OBJECTIVES
from worker.distill.recipes import RECIPES


def test_every_registered_method_has_an_objective_and_vice_versa():
    assert set(OBJECTIVES) == set(METHODS)


def test_the_spec_union_is_the_registry():
    union = typing.get_args(typing.get_args(Method)[0])
    assert list(union) == list(METHODS.values())
    field = JobSpec.model_fields["method"]
    assert typing.get_args(field.annotation) == tuple(METHODS.values()) and field.discriminator == "name"


def test_every_recipe_a_method_names_is_registered():
    named = {cls.recipe for cls in METHODS.values() if cls.recipe is not None}
    assert named <= set(RECIPES)
