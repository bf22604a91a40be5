"""Graph-hop descriptions (GaCLLM): layer texts, prompts, answer validation, the encoder aggregator.

GaCLLM runs a graph convolution whose aggregator is an LLM: at layer l every node's description is
rewritten from its own layer l-1 description and its (sampled) 1-hop neighbours' layer l-1
descriptions, so after L layers a description has absorbed L-hop information while every prompt
reads only 1 hop. The paper's LoRA fine-tuning of the LLM on domain descriptions is out of scope.

- Layer 0 (no LLM call): an item is its catalogue text (title - categories/genres); a user is
  USER_TEMPLATE over the titles of the user's `user_items` most recent visible items.
- Layer l >= 1, prompt of one node: the shared instruction for its node type (first, so vLLM's
  prefix cache reuses it), then its own layer l-1 text cut to `own_chars` characters and its
  sampled neighbours' layer l-1 texts, each cut to `neighbour_chars`. So a prompt is at most
  own_chars + neighbours * (neighbour_chars + 8) characters plus the instruction whatever the
  degree (about a quarter of that in tokens for English text and a BPE tokenizer).
- The answer is JSON {"description": "..."} of at most `max_chars` characters (the JSON schema
  bounds it). `validate_description` keeps it, or repairs the node by keeping its layer l-1 text
  (reason in `detail`): not JSON with a description string, empty, over-long, not text (under half
  letters), or repeated (at least 8 words, under 30% of them distinct): `rec_core.text.checks.not_prose`,
  which the distillation's hints share. A request the engine failed
  is `failed` (also keeping the previous text, so the next layer has an input).
- The encoder aggregator (`mix_embeddings`), the non-LLM ablation: no text is written; a node's
  layer-l embedding is unit((1 - mix) * e_{l-1}(v) + mix * mean_{u in S_l(v)} e_{l-1}(u)) over the
  same sampled neighbours S_l(v) an LLM prompt would read (a node without neighbours keeps e_{l-1}).
- A node budget (`select_nodes`): the N nodes of lowest sha256("<seed>:<type>:<id>") go to the LLM,
  the same nodes in every run; the rest carry the encoder aggregator's embedding, and their
  neighbours read their latest text (layer 0).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from rec_core.graph.bipartite import ITEM, USER
from rec_core.text.checks import not_prose

OK, REPAIRED, FAILED = "ok", "repaired", "failed"
USER_TEMPLATE = "A user who recently engaged with: {items}."

SYSTEM_PROMPTS = {
    USER: ("You write the profile of a user for a recommender system. You get the user's current profile and "
           "descriptions of items the user engaged with. Write an updated profile of at most {max_chars} "
           "characters saying what the user likes, using what the items have in common. Answer with JSON "
           'only: {{"description": "<profile>"}}.'),
    ITEM: ("You write the description of an item for a recommender system. You get the item's current "
           "description and profiles of users who engaged with it. Write an updated description of at most "
           "{max_chars} characters saying what the item is and who it appeals to. Answer with JSON only: "
           '{{"description": "<description>"}}.'),
}
NEIGHBOUR_HEADINGS = {USER: "Items the user engaged with", ITEM: "Users who engaged with the item"}


def user_layer0_text(item_titles: list[str]) -> str:
    return USER_TEMPLATE.format(items="; ".join(item_titles))


def cut(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary where one is near."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    space = head.rfind(" ")
    return head[:space] if space > limit * 0.6 else head


def node_prompt(node_type: str, own_text: str, neighbour_texts: list[str], own_chars: int,
                neighbour_chars: int) -> str:
    lines = "\n".join(f"{number}. {cut(text, neighbour_chars)}" for number, text in enumerate(neighbour_texts, 1))
    return (f"Current description: {cut(own_text, own_chars)}\n"
            f"{NEIGHBOUR_HEADINGS[node_type]}:\n{lines or '(none)'}")


def description_schema(max_chars: int) -> str:
    return json.dumps({"type": "object", "required": ["description"], "additionalProperties": False,
                       "properties": {"description": {"type": "string", "minLength": 1, "maxLength": max_chars}}})


def validate_description(output: str, previous: str, max_chars: int) -> tuple[str, str, str]:
    """(status, text, detail) of one answer; a repaired node keeps `previous` (module docstring)."""
    try:
        answer = json.loads(output)
    except (json.JSONDecodeError, TypeError):
        return REPAIRED, previous, "not JSON: kept the previous layer's text"
    text = answer.get("description") if isinstance(answer, dict) else None
    if not isinstance(text, str):
        return REPAIRED, previous, "no description string: kept the previous layer's text"
    text = " ".join(text.split())
    if not text:
        return REPAIRED, previous, "empty: kept the previous layer's text"
    if len(text) > max_chars:
        return REPAIRED, previous, f"over-long ({len(text)} > {max_chars} characters): kept the previous layer's text"
    reason = not_prose(text)
    if reason:
        return REPAIRED, previous, f"{reason}: kept the previous layer's text"
    return OK, text, ""


def mix_embeddings(own: np.ndarray, neighbour_rows: list[np.ndarray], neighbour_vectors: np.ndarray,
                   mix: float) -> np.ndarray:
    """The encoder aggregator for one node type: unit((1 - mix) own + mix * mean(neighbours)).
    `own` [n, t]; `neighbour_rows[i]` indexes `neighbour_vectors` (the other node type)."""
    out = own.astype(np.float32).copy()
    for index, rows in enumerate(neighbour_rows):
        if len(rows):
            out[index] = (1.0 - mix) * own[index] + mix * neighbour_vectors[rows].mean(0)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def select_nodes(node_type: str, node_ids: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """Boolean mask of the nodes that go to the LLM: all when budget is None, else the `budget`
    nodes of lowest sha256("<seed>:<type>:<id>") (a seeded sample, stable across runs)."""
    if budget is None or budget >= len(node_ids):
        return np.ones(len(node_ids), bool)
    rank = np.argsort([hashlib.sha256(f"{seed}:{node_type}:{int(i)}".encode()).hexdigest() for i in node_ids],
                      kind="stable")
    chosen = np.zeros(len(node_ids), bool)
    chosen[rank[:budget]] = True
    return chosen


def split_budget(max_nodes: int, num_users: int, num_items: int) -> tuple[int | None, int | None]:
    """`graph.max_llm_nodes` (0 = every node) shared between users and items in proportion to their counts."""
    if not max_nodes or max_nodes >= num_users + num_items:
        return None, None
    users = int(round(max_nodes * num_users / (num_users + num_items)))
    return users, max_nodes - users


def label_probe(vectors: np.ndarray, labels: list[list[str]], seed: int, scored: np.ndarray | None = None) -> dict:
    """How well item embeddings still predict their own categories: each item's label is the one
    whose leave-one-out centroid (the mean of the other items of that primary label, normalised)
    is nearest by cosine; a hit when it is one of the item's labels. Two references: `shuffled`,
    the same probe with the embeddings permuted over the items (what embeddings without meaning
    score; cosine to normalised centroids, so a small category's centroid is not favoured for
    being the mean of few vectors), and `majority`, the share of items carrying the most frequent
    label (what always guessing it scores).

    `scored` (a boolean mask over the items): the centroids still come from every labelled item, the
    figures are averaged over the scored ones only (e.g. the few items of an LLM budget, whose
    effect an average over the whole catalogue would hide)."""
    scored = np.ones(len(labels), dtype=bool) if scored is None else np.asarray(scored, dtype=bool)
    keep = [i for i, item_labels in enumerate(labels) if item_labels]
    counted = scored[keep]
    if len(keep) < 2 or not counted.any():
        return {"items": int(counted.sum()), "accuracy": None, "shuffled": None, "majority": None}
    names = sorted({label for i in keep for label in labels[i]})
    column = {name: j for j, name in enumerate(names)}
    primary = np.array([column[labels[i][0]] for i in keep])
    label_sets = [{column[label] for label in labels[i]} for i in keep]

    def accuracy(rows: np.ndarray) -> float:
        unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        sums = np.zeros((len(names), unit.shape[1]))
        np.add.at(sums, primary, unit)
        counts = np.bincount(primary, minlength=len(names))
        dots = unit @ sums.T  # [n, labels]: <item, sum of the label's items>
        norms = np.broadcast_to(np.linalg.norm(sums, axis=1), dots.shape).copy()
        own = np.arange(len(keep)), primary
        self_dot = (unit * unit).sum(1)
        dots[own] -= self_dot  # leave the item out of its own label's sum
        norms[own] = np.sqrt(np.maximum(norms[own] ** 2 - 2 * (dots[own] + self_dot) + self_dot, 0.0))
        others = counts[None, :] - np.eye(len(names), dtype=counts.dtype)[primary]
        scores = np.where((others > 0) & (norms > 1e-12), dots / np.maximum(norms, 1e-12), -np.inf)
        predicted = scores.argmax(1)
        hits = np.array([p in s for p, s in zip(predicted, label_sets)])
        return float(hits[counted].mean())

    rows = vectors[keep]
    shuffled = rows[np.random.default_rng(seed).permutation(len(rows))]
    most_carried = np.bincount([j for s in label_sets for j in s], minlength=len(names)).argmax()
    majority = np.mean([most_carried in s for s, c in zip(label_sets, counted) if c])
    return {"items": int(counted.sum()), "accuracy": round(accuracy(rows), 4), "shuffled": round(accuracy(shuffled), 4),
            "majority": round(float(majority), 4)}
