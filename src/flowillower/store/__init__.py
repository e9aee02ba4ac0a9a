"""The run store: on-disk layout, record frames, the background writer, readers, the index."""
