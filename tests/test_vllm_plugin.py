"""The vLLM plugin that orders AsyncLLM's shutdown (rec_core/llm/vllm_plugin.py), on vLLM's own class."""

import asyncio
import gc
import threading
from importlib.metadata import entry_points

import pytest


def test_the_output_handler_ends_before_the_engine_core_is_stopped():
    pytest.importorskip("vllm")
    from vllm.v1.engine.async_llm import AsyncLLM

    from rec_core.llm.vllm_plugin import register

    register()
    register()  # vLLM may load a plugin more than once in a process
    events = []
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def output_handler():  # waits for outputs, as vLLM's does, until cancelled
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("output handler ended")
            raise

    async def start():
        return asyncio.get_running_loop().create_task(output_handler())

    class EngineCore:
        def shutdown(self, timeout=None):
            events.append("engine core stopped")

    engine = AsyncLLM.__new__(AsyncLLM)  # the real class and its shutdown, without a model
    engine.engine_core = EngineCore()
    engine.output_handler = asyncio.run_coroutine_threadsafe(start(), loop).result(5)
    engine.shutdown()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    assert events == ["output handler ended", "engine core stopped"]
    del engine  # AsyncLLM.__del__ shuts down again: now, not at interpreter exit
    gc.collect()


def test_the_plugin_is_an_installed_vllm_general_plugin():
    pytest.importorskip("vllm")
    plugins = {plugin.name: plugin.value for plugin in entry_points(group="vllm.general_plugins")}
    assert plugins.get("llmrec_shutdown_order") == "rec_core.llm.vllm_plugin:register"
