"""The text-embedding cache: a text embedded once is read back by every later encoder on the same
folder (another stage, another run), keyed by encoder and text; a changed text is a new key."""

import numpy as np
import pyarrow.parquet as pq

from rec_core.text.encoder import TextEncoder, text_key


class CountingModel:
    """Stands in for the sentence-transformers model: a deterministic vector per text, counted."""

    def __init__(self):
        self.texts = []

    def encode(self, texts, **_):
        self.texts += texts
        vectors = np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def encoder_on(folder, model_path=None):
    encoder = TextEncoder(model_path, cache_dir=folder)
    encoder.model_ = CountingModel()
    return encoder


def test_cache_serves_texts_embedded_by_an_earlier_encoder(tmp_path):
    first = encoder_on(tmp_path / "cache", "/models/a")
    vectors = first.encode(["red lipstick", "blue shampoo", "red lipstick"])
    assert first.model_.texts == ["red lipstick", "blue shampoo"] and (first.hits_, first.embedded_) == (1, 2)
    assert np.array_equal(vectors[0], vectors[2])

    later = encoder_on(tmp_path / "cache", "/models/a")  # another stage or run on the same folder
    again = later.encode(["blue shampoo", "red lipstick", "green soap"])
    assert later.model_.texts == ["green soap"] and (later.hits_, later.embedded_) == (2, 1)
    assert np.array_equal(again[0], vectors[1]) and np.array_equal(again[1], vectors[0])
    assert not list((tmp_path / "cache").glob(".*.tmp"))  # parts are renamed into place

    other = encoder_on(tmp_path / "cache", "/models/b")  # a different encoder never reads a's vectors
    other.encode(["red lipstick"])
    assert other.model_.texts == ["red lipstick"]
    assert text_key("a", "x") != text_key("b", "x") != text_key("a", "y")


def test_without_a_cache_folder_every_call_embeds(tmp_path):
    encoder = encoder_on(None, "/models/a")
    encoder.encode(["a text"])
    encoder.encode(["a text"])
    assert encoder.model_.texts == ["a text", "a text"]


def test_a_damaged_cache_part_is_quarantined_and_its_texts_embedded_again(tmp_path):
    first = encoder_on(tmp_path / "cache", "/models/a")
    first.encode(["red lipstick"])
    first.encode(["blue shampoo"])
    damaged, intact = sorted((tmp_path / "cache").glob("part-*.parquet"))
    damaged.write_bytes(damaged.read_bytes()[:100])
    kept = pq.read_table(intact).column("key").to_pylist()
    later = encoder_on(tmp_path / "cache", "/models/a")
    later.encode(["red lipstick", "blue shampoo"])
    lost = [text for text in ["red lipstick", "blue shampoo"] if text_key(later.id_, text) not in kept]
    assert len(lost) == 1 and later.model_.texts == lost and later.quarantined_ == [damaged.name]
    assert (tmp_path / "cache" / "quarantine" / damaged.name).is_file()


def test_the_cache_is_in_output_dir_unless_text_cache_dir_puts_it_elsewhere(tmp_path):
    from rec_core.run.config import load_config
    from rec_core.run.directory import text_cache_folder

    assert text_cache_folder(load_config(None, [f"output_dir={tmp_path}"])).as_path() == \
        tmp_path / "text_embedding_cache"
    shared = load_config(None, [f"output_dir={tmp_path}", f"text_cache_dir={tmp_path / 'shared'}"])
    assert text_cache_folder(shared).as_path() == tmp_path / "shared"
