"""edgeblur: faces are masked on the device before any frame is stored or streamed."""
