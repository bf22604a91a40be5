"""A vLLM general plugin: vLLM loads it (entry point `vllm.general_plugins`, pyproject.toml) in every
process where it builds an engine, here the Ray Data engine actor of the LLM stage.

It puts AsyncLLM's shutdown in order. vLLM's `AsyncLLM.shutdown` stops the engine core first and
cancels its output-handler task after, so a handler still waiting for outputs meets the engine it
was told to stop and logs "AsyncLLM output_handler failed" with an EngineDeadError traceback at the
end of a stage that succeeded (seen in 1 of 4 runs of the LLM integration tests, in CI). Here the
handler is cancelled, and awaited, first; the rest of the shutdown is vLLM's own. Loading it twice
in one process patches once.
"""

from __future__ import annotations

import asyncio


def register() -> None:
    try:
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError:  # another vLLM layout: leave it as it is
        return
    original = getattr(AsyncLLM, "shutdown", None)
    if original is None or getattr(original, "stops_output_handler_first", False):
        return

    def shutdown(self, *args, **kwargs):
        stop_output_handler(getattr(self, "output_handler", None))
        return original(self, *args, **kwargs)

    shutdown.stops_output_handler_first = True
    AsyncLLM.shutdown = shutdown


def stop_output_handler(task, wait_s: float = 5.0) -> None:
    """Cancel an asyncio task of another thread's loop and wait (at most `wait_s`) until it has
    ended; called on the loop's own thread, cancel it: it ends at its next resumption, before any
    other outcome of the await it is suspended in."""
    if task is None or task.done():
        return
    loop = task.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        task.cancel()
        return
    if loop.is_closed():
        return

    async def cancel_and_wait():
        task.cancel()
        try:
            await task
        except BaseException:  # its cancellation, or what it ended with
            pass

    try:
        asyncio.run_coroutine_threadsafe(cancel_and_wait(), loop).result(wait_s)
    except Exception:  # the loop stopped or the wait timed out: vLLM's own shutdown goes on
        pass
