"""Synthetic interaction logs with item text, at any size, for the scale benchmark (issue 16).

    items, users, interactions = synthetic_tables(users=100_000, seed=0)
    write_generic(items, interactions, users, folder)        # the generic input format

What is drawn (all from one seeded numpy generator, vectorised, so 1M users take seconds):

- `topics` latent interests, each a theme of THEMES (a category name and its words; past the
  themes' count a numbered variant, e.g. "Cooking 2", with the same words). An item belongs to
  one topic: its title is an adjective, two of its theme's words and its number in the topic
  ("Classic Skillet Whisk No. 12", so no two items share a text),
  its categories "<theme>|<topic>", so the text encoder and the labels find the topic again.
- popularity: within a topic, items follow a Zipf law of exponent `popularity_exponent` over
  their rank (rank 1 the most popular; ranks are a seeded shuffle of the topic's items);
- users: each has 1 to `max_user_topics` topics with Dirichlet weights; history lengths are
  `min_history` + a Lomax (Pareto II) draw of shape `history_shape` and scale `history_scale`,
  capped at `max_history` (power-law tail; mean about min + scale / (shape - 1));
- each interaction picks one of the user's topics by weight, then an item of that topic by
  popularity; repeats of a (user, item) pair are dropped (a history holds distinct items), so
  a few histories end shorter than drawn; timestamps increase within a user (seconds from a
  seeded start in 2020, gaps of 1 minute to 2 days).

Users and items get string source ids ("u<n>", "i<n>"), as a user's export would. The defaults are
chosen to look like the shipped data sets (ML-100K / Amazon Beauty: ~10-100 interactions per user,
long-tailed item popularity); nothing is tuned on them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

THEMES = {
    "Cooking": ["skillet", "whisk", "spatula", "saucepan", "knife", "cutting board", "oven mitt", "colander",
                "ladle", "grater"],
    "Gardening": ["trowel", "seed tray", "watering can", "pruner", "compost bin", "hose reel", "planter",
                  "rake", "garden gloves", "trellis"],
    "Camping": ["tent", "sleeping bag", "lantern", "camp stove", "backpack", "hammock", "compass",
                "water filter", "tarp", "trekking poles"],
    "Skincare": ["moisturizer", "serum", "cleanser", "toner", "sunscreen", "face mask", "eye cream",
                 "exfoliator", "lip balm", "night cream"],
    "Haircare": ["shampoo", "conditioner", "hair oil", "hair dryer", "curling iron", "hair spray",
                 "comb", "hair mask", "straightener", "scalp scrub"],
    "Fitness": ["dumbbell", "yoga mat", "kettlebell", "resistance band", "jump rope", "foam roller",
                "pull-up bar", "exercise ball", "ankle weights", "gym bag"],
    "Cycling": ["bike helmet", "bike light", "saddle", "pedals", "cycling jersey", "bike lock",
                "tire pump", "handlebar tape", "chain lube", "water bottle cage"],
    "Photography": ["camera lens", "tripod", "camera bag", "memory card", "lens filter", "flash",
                    "light meter", "lens cap", "camera strap", "reflector"],
    "Music": ["guitar strings", "drum sticks", "metronome", "capo", "keyboard stand", "guitar pick",
              "sheet music", "tuner", "microphone", "headphones"],
    "Baking": ["mixing bowl", "rolling pin", "cake pan", "muffin tin", "piping bag", "measuring cups",
               "cooling rack", "pastry brush", "flour sifter", "cookie cutter"],
    "Coffee": ["espresso beans", "french press", "coffee grinder", "milk frother", "pour-over kettle",
               "coffee filter", "espresso cup", "cold brew jar", "tamper", "coffee scale"],
    "Tea": ["green tea", "tea kettle", "teapot", "tea infuser", "matcha whisk", "oolong tea", "tea cups",
            "chai blend", "herbal tea", "tea strainer"],
    "Pets": ["dog leash", "cat toy", "pet bed", "chew bone", "litter box", "pet brush", "dog collar",
             "fish tank", "bird feeder", "pet carrier"],
    "Baby": ["baby bottle", "diaper bag", "pacifier", "baby monitor", "stroller", "crib sheet",
             "teething ring", "baby carrier", "bath tub", "bib"],
    "Office": ["stapler", "desk lamp", "notebook", "fountain pen", "paper clips", "file folder",
               "desk organizer", "sticky notes", "letter tray", "whiteboard"],
    "Gaming": ["game controller", "gaming mouse", "mechanical keyboard", "headset", "mouse pad",
               "capture card", "gaming chair", "console stand", "charging dock", "joystick"],
    "Reading": ["novel", "bookmark", "reading light", "book stand", "poetry collection", "e-reader case",
                "book light", "short stories", "anthology", "journal"],
    "Painting": ["watercolor set", "paint brushes", "canvas", "easel", "acrylic paint", "palette knife",
                 "sketchbook", "oil pastels", "gesso", "drawing pencils"],
    "Travel": ["suitcase", "passport holder", "neck pillow", "packing cubes", "travel adapter",
               "luggage tag", "toiletry bag", "money belt", "travel towel", "eye mask"],
    "Fishing": ["fishing rod", "reel", "tackle box", "fishing line", "lure", "bait bucket", "landing net",
                "fly box", "waders", "hooks"],
    "Cleaning": ["mop", "vacuum", "scrub brush", "microfiber cloth", "spray bottle", "dustpan",
                 "sponge", "bucket", "lint roller", "squeegee"],
    "Jewelry": ["necklace", "earrings", "bracelet", "ring", "pendant", "brooch", "anklet", "cufflinks",
                "jewelry box", "charm"],
    "Watches": ["wristwatch", "watch strap", "watch winder", "chronograph", "dive watch", "pocket watch",
                "smartwatch band", "watch case", "watch tool kit", "field watch"],
    "Footwear": ["running shoes", "hiking boots", "sandals", "sneakers", "shoe laces", "insoles",
                 "slippers", "rain boots", "shoe polish", "loafers"],
}
ADJECTIVES = ["Classic", "Deluxe", "Compact", "Premium", "Essential", "Vintage", "Modern", "Portable",
              "Professional", "Lightweight", "Sturdy", "Everyday"]


def synthetic_tables(users: int, items: int | None = None, topics: int = 48, seed: int = 0,
                     max_user_topics: int = 4, popularity_exponent: float = 1.0, min_history: int = 5,
                     history_shape: float = 1.8, history_scale: float = 8.0, max_history: int = 500
                     ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(items, users, interactions) in the canonical shape of rec_core.data.datasets (dense ids,
    `source_id`, item `title` / `text` / `labels`; interactions sorted by user and time).
    `items` defaults to max(2000, users // 10) (between the user:item ratios of ML-1M and Amazon Beauty)."""
    if users < 1 or topics < 1 or min_history < 1:
        raise ValueError(f"users, topics and min_history must be positive (got {users}, {topics}, {min_history})")
    n_items = int(items or max(2000, users // 10))
    if n_items < topics:
        raise ValueError(f"items ({n_items}) must be at least topics ({topics})")
    rng = np.random.default_rng(seed)
    item_frame, topic_items = _items(n_items, topics, rng)

    user_topics = rng.integers(0, topics, size=(users, max_user_topics))
    counts = rng.integers(1, max_user_topics + 1, size=users)
    weights = rng.dirichlet(np.ones(max_user_topics), size=users)
    weights[np.arange(max_user_topics)[None, :] >= counts[:, None]] = 0.0
    cumulative = np.cumsum(weights / weights.sum(1, keepdims=True), axis=1)
    lengths = np.minimum(min_history + np.floor(rng.pareto(history_shape, users) * history_scale).astype(np.int64),
                         max_history)

    user_of = np.repeat(np.arange(users, dtype=np.int64), lengths)
    slot = np.minimum((rng.random(len(user_of))[:, None] > cumulative[user_of]).sum(1), max_user_topics - 1)
    topic = user_topics[user_of, slot]
    per_topic = topic_items.shape[1]
    popularity = np.cumsum(1.0 / np.arange(1, per_topic + 1) ** popularity_exponent)
    rank = np.minimum(np.searchsorted(popularity / popularity[-1], rng.random(len(user_of))), per_topic - 1)
    item = topic_items[topic, rank]
    valid = item >= 0  # topics with fewer items than the widest one pad with -1 (see _items)
    while not valid.all():
        redraw = np.flatnonzero(~valid)
        rank[redraw] = rng.integers(0, per_topic, len(redraw))
        item[redraw] = topic_items[topic[redraw], rank[redraw]]
        valid = item >= 0

    start = rng.integers(1_577_836_800, 1_609_459_200, size=users)  # a start time in 2020
    gaps = rng.integers(60, 2 * 86_400, size=len(user_of))
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ts = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first] - gaps[first], lengths) + np.repeat(start, lengths)
    interactions = pd.DataFrame({"user_id": user_of, "item_id": item, "ts": ts})
    interactions = interactions.drop_duplicates(["user_id", "item_id"], keep="first").reset_index(drop=True)
    user_frame = pd.DataFrame({"user_id": np.arange(users, dtype=np.int64),
                               "source_id": np.char.add("u", np.arange(users).astype(str)).astype(object)})
    return item_frame, user_frame, interactions


def _items(n_items: int, topics: int, rng) -> tuple[pd.DataFrame, np.ndarray]:
    """The item table and a (topics, widest topic) array of item ids by popularity rank (-1 pads)."""
    names = list(THEMES)
    topic_of = np.sort(np.arange(n_items) % topics)
    theme = [names[t % len(names)] for t in range(topics)]
    topic_name = [f"{theme[t]} {t // len(names) + 1}" if t >= len(names) else theme[t] for t in range(topics)]
    words = [THEMES[theme[t]] for t in topic_of]
    first, second = rng.integers(0, 10, n_items), rng.integers(1, 10, n_items)
    adjective = rng.integers(0, len(ADJECTIVES), n_items)
    number = np.arange(n_items) - np.searchsorted(topic_of, topic_of)  # the item's number within its topic
    titles = [f"{ADJECTIVES[a]} {w[i].title()} {w[(i + j) % 10].title()} No. {k + 1}"
              for a, w, i, j, k in zip(adjective, words, first, second, number)]
    labels = [[theme[t], topic_name[t]] if topic_name[t] != theme[t] else [theme[t]] for t in topic_of]
    frame = pd.DataFrame({"item_id": np.arange(n_items, dtype=np.int64),
                          "source_id": np.char.add("i", np.arange(n_items).astype(str)).astype(object),
                          "title": titles,
                          "text": [f"{title} - {', '.join(label)}" for title, label in zip(titles, labels)],
                          "labels": labels})
    widest = int(np.bincount(topic_of).max())
    ranked = np.full((topics, widest), -1, dtype=np.int64)
    for t in range(topics):
        members = rng.permutation(np.flatnonzero(topic_of == t))
        ranked[t, :len(members)] = members
    return frame, ranked
