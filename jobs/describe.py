"""Stage: graph-hop descriptions (GaCLLM) -> tables `node_descriptions` and `node_text_embeddings`.

Layer by layer over the user-item graph of what the protocol lets a model see
(rec_core.graph.bipartite: training sequences and valid/test histories, never a target), every node's
layer-l text or embedding is computed from its own and its sampled neighbours' layer l-1 ones
(rec_core.graph.descriptions has the texts, prompts, validation and the encoder aggregator):

- `graph.backend=encoder` (the default here, where the small offline LLM writes poor text): the
  embedding mix; rows of layers >= 1 carry no text;
- `graph.backend=llm`: each layer is one pass of the project's LLM stage (rec_core.llm.stage: Ray
  Data shards the prompts over the vLLM engines; cached, so a killed run sent again resends nothing
  it had answered) for the `graph.max_llm_nodes` budget (0 = every node); the generated texts are
  embedded with the text encoder; nodes outside the budget get the encoder aggregator's embedding.

Tables. node_descriptions: node_type ("user"/"item"), node_id (user id / item id), layer, text,
status (ok / repaired / failed), backend (layer0 / encoder / llm), cache_key (LLM prompt key),
detail (why repaired or failed, or what the encoder mixed). node_text_embeddings: node_type,
node_id, layer, vector (unit, the text encoder's dimension). Text embeddings go through the shared
cache (rec_core.text.encoder), so no run re-embeds a text any stage has embedded.

The manifest records per layer the nodes ok / repaired / failed, LLM prompts, cache hits, tokens
and seconds, the longest prompt, and the diagnostic: how well each layer's item embeddings
predict the items' own categories (leave-one-out nearest label centroid) against the layer-0 text
and a shuffled control (printed too).

    python -m jobs.describe run_id=<a run with ingest done> graph.backend=llm graph.max_llm_nodes=500
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter

import numpy as np
import pandas as pd

from rec_core.graph.bipartite import ITEM, USER, visible_graph, sample_neighbours
from rec_core.graph.descriptions import (FAILED, OK, SYSTEM_PROMPTS, description_schema, label_probe,
                                         mix_embeddings, node_prompt, select_nodes, split_budget,
                                         user_layer0_text, validate_description)
from rec_core.run.cli import main_guard
from rec_core.run.directory import Run, text_cache_folder
from rec_core.text.encoder import TextEncoder

log = logging.getLogger(__name__)

OTHER = {USER: ITEM, ITEM: USER}


def layer_rows(node_type: str, node_ids: np.ndarray, layer: int, texts, statuses, backends, keys, details):
    return pd.DataFrame({"node_type": node_type, "node_id": node_ids.astype(np.int64), "layer": layer,
                         "text": texts, "status": statuses, "backend": backends, "cache_key": keys,
                         "detail": details})


def layer0_texts(run: Run):
    """The protocol graph, the node ids ({type: ids}) and the layer-0 texts ({type: list})."""
    items = run.read_table("items")
    graph = visible_graph(run.read_table("interactions"), run.read_table("user_splits"), len(items),
                          run.config["split"]["history_fraction"])
    titles, user_items = items["title"].tolist(), run.config["graph"]["user_items"]
    texts = {ITEM: items["text"].tolist(),
             USER: [user_layer0_text([titles[i] for i in graph.neighbours(USER, row)[:user_items]])
                    for row in range(graph.num_users)]}
    return graph, {USER: graph.user_ids, ITEM: np.arange(graph.num_items)}, texts


def layer_samples(graph, ids: dict, layer: int, graph_config: dict) -> dict:
    return {t: [sample_neighbours(graph, t, index, layer, graph_config["neighbours"], graph_config["seed"])
                for index in range(len(ids[t]))] for t in (USER, ITEM)}


def llm_nodes(ids: dict, graph_config: dict) -> dict:
    """{type: mask} of the nodes the LLM rewrites: the `graph.max_llm_nodes` budget (0 = all)."""
    budgets = split_budget(graph_config["max_llm_nodes"], len(ids[USER]), len(ids[ITEM]))
    return {t: select_nodes(t, ids[t], budget, graph_config["seed"]) for t, budget in zip((USER, ITEM), budgets)}


def description_requests(graph_config: dict, ids: dict, texts: dict, samples: dict, chosen: dict) -> pd.DataFrame:
    """The LLM requests of one layer for the chosen nodes ({type: mask}), users first; request id
    "<type>:<id>"."""
    schema = description_schema(graph_config["max_chars"])
    frames = []
    for node_type in (USER, ITEM):
        positions = np.flatnonzero(chosen[node_type])
        other = texts[OTHER[node_type]]
        frames.append(pd.DataFrame({
            "request_id": [f"{node_type}:{int(ids[node_type][p])}" for p in positions],
            "system": SYSTEM_PROMPTS[node_type].format(max_chars=graph_config["max_chars"]),
            "user": [node_prompt(node_type, texts[node_type][p], [other[q] for q in samples[node_type][p]],
                                 graph_config["own_chars"], graph_config["neighbour_chars"]) for p in positions],
            "schema": schema}))
    return pd.concat(frames, ignore_index=True)


def llm_layer(config: dict, ids: dict, texts: dict, samples: dict, chosen: dict):
    """One LLM pass over the chosen nodes: {type: (positions, texts, statuses, keys, details)} and
    the stage's LLM statistics."""
    from rec_core.llm.prompt_cache import PromptCache
    from rec_core.llm.stage import cache_folder, run_prompts

    graph_config = config["graph"]
    requests = description_requests(graph_config, ids, texts, samples, chosen)
    answers, stats = run_prompts(requests, config["llm"], PromptCache(cache_folder(config)),
                                 cache_flush_rows=config["llm"]["cache_flush_rows"], ray_settings=config["ray"])
    by_request = answers.set_index("request_id")
    out = {}
    for node_type in (USER, ITEM):
        positions = np.flatnonzero(chosen[node_type])
        new_texts, statuses, keys, details = [], [], [], []
        for p in positions:
            answer = by_request.loc[f"{node_type}:{int(ids[node_type][p])}"]
            previous = texts[node_type][p]
            if answer["error"]:
                status, text, detail = FAILED, previous, f"request error: {answer['error']}; kept the previous text"
            else:
                status, text, detail = validate_description(answer["output"], previous, graph_config["max_chars"])
            new_texts.append(text)
            statuses.append(status)
            keys.append(answer["key"])
            details.append(detail)
        out[node_type] = (positions, new_texts, statuses, keys, details)
    longest = int(requests["user"].str.len().max()) if len(requests) else 0
    return out, {**stats.as_dict(), "longest_prompt_chars": longest}


def describe(run: Run) -> dict:
    config, graph_config = run.config, run.config["graph"]
    with run.stage("describe") as info:
        items = run.read_table("items")
        graph, ids, texts = layer0_texts(run)
        encoder = TextEncoder(config["semantic"]["encoder_model"], text_cache_folder(config))
        vectors = {node_type: encoder.encode(texts[node_type]) for node_type in (USER, ITEM)}
        descriptions = [layer_rows(t, ids[t], 0, texts[t], OK, "layer0", "", "") for t in (USER, ITEM)]
        embeddings = [(0, vectors)]
        chosen = llm_nodes(ids, graph_config)
        layers, budget_items_mix = [], {}  # layer -> the LLM items' embedding mix, had the encoder done them
        for layer in range(1, graph_config["layers"] + 1):
            began = time.perf_counter()
            samples = layer_samples(graph, ids, layer, graph_config)
            mixed = {t: mix_embeddings(vectors[t], samples[t], vectors[OTHER[t]], graph_config["mix"])
                     for t in (USER, ITEM)}
            record: dict = {"layer": layer}
            new_texts, frames = {}, []
            llm = llm_layer(config, ids, texts, samples, chosen) if graph_config["backend"] == "llm" else None
            for t in (USER, ITEM):
                count = len(ids[t])
                detail = [f"embedding mix of own and {len(s)} neighbours" for s in samples[t]]
                frame = layer_rows(t, ids[t], layer, [""] * count, [OK] * count, ["encoder"] * count, [""] * count,
                                   detail)
                new_texts[t] = list(texts[t])
                if llm is not None:
                    positions, generated, statuses, keys, details = llm[0][t]
                    for column, values in (("text", generated), ("status", statuses), ("cache_key", keys),
                                           ("detail", details)):
                        frame.loc[positions, column] = values
                    frame.loc[positions, "backend"] = "llm"
                    for p, text in zip(positions, generated):
                        new_texts[t][p] = text
                    if len(positions):
                        if t == ITEM:
                            budget_items_mix[layer] = mixed[t][positions].copy()
                        mixed[t][positions] = encoder.encode(list(generated))
                frames.append(frame)
                record[t] = dict(Counter(frame["status"])) | {"llm_nodes": int((frame["backend"] == "llm").sum())}
            if llm is not None:
                record["llm"] = llm[1]
            record["seconds"] = round(time.perf_counter() - began, 2)
            descriptions += frames
            texts, vectors = new_texts, mixed
            embeddings.append((layer, vectors))
            layers.append(record)
            log.info("describe: layer %d %s", layer, json.dumps(record))
        labels = [list(labels) for labels in items["labels"]] if "labels" in items else [[] for _ in range(len(items))]
        diagnostic = {f"layer_{layer}": label_probe(layer_vectors[ITEM], labels, graph_config["seed"])
                      for layer, layer_vectors in embeddings}
        budget_probe = llm_items_probe(embeddings, budget_items_mix, chosen[ITEM], labels, graph_config["seed"])
        table = pd.concat(descriptions, ignore_index=True)
        vector_rows = pd.concat([pd.DataFrame({"node_type": t, "node_id": ids[t].astype(np.int64), "layer": layer,
                                               "vector": list(layer_vectors[t])})
                                 for layer, layer_vectors in embeddings for t in (USER, ITEM)], ignore_index=True)
        info["rows"] = {"node_descriptions": run.write_table("node_descriptions", table),
                        "node_text_embeddings": run.write_table("node_text_embeddings", vector_rows)}
        info.update(backend=graph_config["backend"], nodes={USER: graph.num_users, ITEM: graph.num_items},
                    edges=int(len(graph.user_items)), layers=layers,
                    text_encoder={"id": encoder.id_, "cache_hits": encoder.hits_, "embedded": encoder.embedded_,
                                  "cache_parts_quarantined": len(encoder.quarantined_)},
                    category_probe=diagnostic, llm_items_probe=budget_probe)
        print("description diagnostic (items' own categories from each layer's embedding, leave-one-out nearest "
              "label centroid; shuffled = chance):\n" + "\n".join(f"  {name}: {value}" for name, value in diagnostic.items()),
              flush=True)
        if budget_probe:
            print("the same on the LLM's items only (llm: their descriptions; embedding_mix: the encoder aggregator's "
                  "mix of the same inputs):\n" + "\n".join(f"  {name}: {value}" for name, value in budget_probe.items()),
                  flush=True)
    return info


def llm_items_probe(embeddings: list[tuple[int, dict]], budget_items_mix: dict[int, np.ndarray],
                    chosen_items: np.ndarray, labels: list[list[str]], seed: int) -> dict:
    """The category probe scored on the items the LLM described (a budget of a few hundred nodes moves
    the whole catalogue's figure by a rounding error): per layer, with their LLM descriptions'
    embeddings (`llm`) and with what the encoder aggregator would have given them from the same
    previous-layer inputs (`embedding_mix`), the rest of the catalogue the same in both. Empty without
    LLM items."""
    probe = {}
    for layer, layer_vectors in embeddings:
        if layer not in budget_items_mix:
            continue
        llm = label_probe(layer_vectors[ITEM], labels, seed, scored=chosen_items)
        instead = layer_vectors[ITEM].copy()
        instead[np.flatnonzero(chosen_items)] = budget_items_mix[layer]
        mix = label_probe(instead, labels, seed, scored=chosen_items)
        probe[f"layer_{layer}"] = {"items": llm["items"], "llm": llm["accuracy"], "embedding_mix": mix["accuracy"],
                                   "shuffled": llm["shuffled"], "majority": llm["majority"]}
    return probe


def main(argv=None) -> None:
    main_guard(lambda config: describe(Run(config)), argv, __doc__)


if __name__ == "__main__":
    main()
