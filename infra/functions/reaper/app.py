"""The scheduled reaper: the logic lives in the library (``durable_semaphore.reaper``)."""

from durable_semaphore.reaper import handler

__all__ = ["handler"]
