"""Job workers over Redis Streams; see the issue tracker for its state."""
