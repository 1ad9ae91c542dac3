"""The hub: the server on the VPS that holds the task queue, workers, messages and events."""
