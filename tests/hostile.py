"""Mutations of real files for the fuzz tests: one value somewhere replaced by a hostile one (a wrong type, NaN,
a huge number, an unsafe name, deep nesting) or deleted, or the text cut short."""

import copy
import json

from hypothesis import strategies as st

HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10 ** 400), max_value=10 ** 400),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 0.0, -1.0, 5e-324]),
    st.text(max_size=12), st.sampled_from(["../../escape", "a/b", "..", "", "x\x00y", "lora"]),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4), st.just([]), st.just({}),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
    st.integers(min_value=40, max_value=400).map(lambda n: nested(n)))


def nested(n: int) -> list:
    value: list = []
    for _ in range(n):
        value = [value]
    return value


@st.composite
def mutated(draw, doc):
    """``doc`` with one value somewhere replaced by a hostile one (or deleted), or its text cut short."""
    doc = copy.deepcopy(doc)
    node, depth = doc, 0
    while isinstance(node, (dict, list)) and node and depth < 8:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = draw(st.sampled_from(keys))
        child = node[key]
        if not isinstance(child, (dict, list)) or not child or draw(st.integers(0, 3)) == 0:
            if isinstance(node, dict) and draw(st.integers(0, 5)) == 0:
                del node[key]
            else:
                node[key] = draw(HOSTILE)
            break
        node, depth = child, depth + 1
    text = json.dumps(doc, allow_nan=True)
    if draw(st.integers(0, 5)) == 0:
        text = text[:draw(st.integers(0, max(0, len(text) - 1)))]
    return text
