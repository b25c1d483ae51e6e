"""BurrowMQ's engine: connections, channels, exchanges, queues, consumers."""

__version__ = "0.1.0"
