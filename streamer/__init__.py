"""The running system: frames, sources, the stage graph, tracking, the wire format,
publishing, subscribing, motion files and latency statistics."""
