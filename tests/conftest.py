import os
from pathlib import Path

import pytest

DATA_DIR = Path(os.environ.get("REC_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))

# Ray Train's controller polls its workers every 2 s and starts a preemption-watcher actor (for nodes
# drained by a cloud provider) with every run; the suite trains some 25 tiny models, each a few
# seconds of work. Polling every 0.25 s and no watcher: ~2 s less per run here (12.1/11.8 s -> 9.5/
# 10.0 s for one ML-100K epoch of 3,000 samples, 2026-12-06). The processes the tests start, Ray's
# included, inherit both; what is trained and checked is the same.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "movielens-100k").is_dir():
        pytest.skip(f"shared data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def shared_text_cache(tmp_path_factory) -> str:
    """`text_cache_dir=...` for the end-to-end tests on the shared data sets: one text-embedding cache
    for the whole session, as nightly runs share one, so a catalogue or a graph's layer-0 texts are
    embedded by the first test that needs them and read back by the others (each embedding of the
    ML-100K graph's texts is ~40 s on 2 CPUs). Tests of the cache itself use their own folders."""
    return f"text_cache_dir={tmp_path_factory.mktemp('text_embedding_cache')}"


@pytest.fixture(scope="module")
def local_ray():
    """Real local Ray with 2 CPUs for one test module, shut down after it."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()


S3_ENV = {"AWS_ACCESS_KEY_ID": "llmrec-test", "AWS_SECRET_ACCESS_KEY": "llmrec-test", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def s3_server():
    """An S3-compatible server (moto's) on 127.0.0.1 for one test module, with a bucket `llmrec-test`;
    yields the bucket's URI with the client options in its query. The credentials are the test's own,
    set in this process's environment (what a child process and Ray's workers inherit) while it runs."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    saved = {key: os.environ.get(key) for key in S3_ENV}
    os.environ.update(S3_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    import pyarrow.fs

    bucket = f"s3://llmrec-test?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    pyarrow.fs.FileSystem.from_uri(bucket + "&allow_bucket_creation=true")[0].create_dir("llmrec-test")
    yield bucket
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
