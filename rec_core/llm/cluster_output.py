"""Validation and repair of an LLM's semantic-cluster output for one user.

The prompt lists the user's items numbered 1..n and asks for JSON of this schema:

    {"clusters": [{"name": "<short interest name>", "items": [<item number>, ...]}, ...]}

Every answer is checked against the schema and the input, then repaired by these rules, in order
(each applied rule is recorded in `ClusterResult.repairs`):

1. text that is not a JSON object with a "clusters" list -> failed ("not JSON" / "schema");
   a cluster that is not an object, or whose "items" is not a list, is dropped;
2. item numbers given as strings of digits are read as numbers; other non-integers are dropped;
3. numbers outside 1..n (invented items) are dropped;
4. an item named twice (in one or in two clusters) stays where it appeared first;
5. clusters left empty are removed; a missing or blank name becomes "interest <k>";
6. items no cluster names go to the nearest cluster by item-embedding centroid (cosine) when
   embeddings are given, otherwise into one extra "other" cluster;
7. more than `max_clusters` clusters: the smallest cluster is merged into its nearest (by
   centroid; without embeddings, into the largest) until the bound holds.

If no item survives rules 1-5 the output is failed ("no valid item assigned"). The result is
otherwise a partition of the user's items into 1..max_clusters non-empty named clusters, with
status "ok" (no rule applied) or "repaired".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

OK, REPAIRED, FAILED = "ok", "repaired", "failed"

CLUSTER_SCHEMA = {
    "type": "object",
    "properties": {
        "clusters": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"},
                               "items": {"type": "array", "items": {"type": "integer"}, "minItems": 1}},
                "required": ["name", "items"],
            },
        },
    },
    "required": ["clusters"],
}


@dataclass
class ClusterResult:
    status: str
    names: list[str] = field(default_factory=list)
    clusters: list[list[int]] = field(default_factory=list)  # item ids (not prompt numbers)
    repairs: list[str] = field(default_factory=list)
    reason: str | None = None


def _failed(reason: str) -> ClusterResult:
    return ClusterResult(FAILED, reason=reason)


def _as_number(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():  # not '²'
        return int(value.strip())
    return None


def validate_clusters(text: str, item_ids: list[int], max_clusters: int,
                      item_vectors: np.ndarray | None = None) -> ClusterResult:
    """Check and repair one answer; `item_vectors[i]` is the embedding of item_ids[i] (optional)."""
    n = len(item_ids)
    if n == 0:
        return _failed("user has no items")
    try:
        parsed = json.loads(text)
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        return _failed(f"not JSON: {str(error)[:80]}")
    if not isinstance(parsed, dict) or not isinstance(parsed.get("clusters"), list):
        return _failed("schema: expected an object with a 'clusters' list")

    repairs: list[str] = []
    seen: set[int] = set()
    names: list[str] = []
    members: list[list[int]] = []  # prompt positions 0..n-1
    for raw in parsed["clusters"]:
        if not isinstance(raw, dict) or not isinstance(raw.get("items"), list):
            repairs.append("dropped a malformed cluster")
            continue
        positions = []
        for value in raw["items"]:
            number = _as_number(value)
            if number is None:
                repairs.append("dropped a non-integer item")
            elif not 1 <= number <= n:
                repairs.append(f"dropped out-of-range item {number}")
            elif number - 1 in seen:
                repairs.append(f"dropped duplicate item {number}")
            else:
                if not isinstance(value, int):
                    repairs.append("read an item number given as text")
                seen.add(number - 1)
                positions.append(number - 1)
        if not positions:
            repairs.append("removed an empty cluster")
            continue
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            name = f"interest {len(members) + 1}"
            repairs.append("named an unnamed cluster")
        names.append(name.strip()[:80])
        members.append(positions)
    if not members:
        return _failed("no valid item assigned")

    unassigned = [p for p in range(n) if p not in seen]
    if unassigned:
        if item_vectors is not None:
            centroids = _centroids(members, item_vectors)
            for position in unassigned:
                members[int(np.argmax(centroids @ _unit(item_vectors[position])))].append(position)
            repairs.append(f"assigned {len(unassigned)} unassigned item(s) to the nearest cluster")
        else:
            names.append("other")
            members.append(unassigned)
            repairs.append(f"put {len(unassigned)} unassigned item(s) into an 'other' cluster")

    while len(members) > max_clusters:
        smallest = min(range(len(members)), key=lambda c: len(members[c]))
        if item_vectors is not None:
            centroids = _centroids(members, item_vectors)
            similarity = centroids @ centroids[smallest]
            similarity[smallest] = -np.inf
            target = int(np.argmax(similarity))
        else:
            target = max((c for c in range(len(members)) if c != smallest), key=lambda c: len(members[c]))
        members[target].extend(members.pop(smallest))
        names.pop(smallest)
        repairs.append("merged the smallest cluster into its nearest (too many clusters)")

    clusters = [[int(item_ids[p]) for p in positions] for positions in members]
    return ClusterResult(REPAIRED if repairs else OK, names, clusters, repairs)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / (np.linalg.norm(vector) + 1e-12)


def _centroids(members: list[list[int]], item_vectors: np.ndarray) -> np.ndarray:
    return np.stack([_unit(item_vectors[positions].mean(0)) for positions in members])
