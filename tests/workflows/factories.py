"""Workflow test data: definition documents and published definitions."""

import copy

from audit.actors import Actor
from workflows.services import workflow_definition_create, workflow_definition_publish

ACTOR = Actor(type="user", id="tester", name="tester")


def linear(*activities: dict, name: str = "test-workflow", variables=None, input_schema=None, connections=None) -> dict:
    """A document whose activities run in the given order (unless connections are given)."""
    document = {"name": name, "activities": list(activities)}
    if connections is None:
        connections = [{"source": a["id"], "target": b["id"]} for a, b in zip(activities, activities[1:], strict=False)]
    document["connections"] = connections
    if variables is not None:
        document["variables"] = variables
    if input_schema is not None:
        document["input_schema"] = input_schema
    return document


def five_step_document() -> dict:
    """SetVariable, If, SetVariable, WriteLog, Finish: the benchmark workflow (bench/figures/workflow.py)."""
    from bench.figures.workflow import DOCUMENT

    return {**copy.deepcopy(DOCUMENT), "name": "five-steps"}


def published(document: dict, actor: Actor = ACTOR):
    definition = workflow_definition_create(document=document, actor=actor)
    return workflow_definition_publish(definition=definition, actor=actor)
