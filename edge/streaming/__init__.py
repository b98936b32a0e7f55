"""Live outputs of the anonymised stream: the RTSP pull server, and push to an operator's
RTSP server."""
