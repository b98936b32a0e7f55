"""Serve an H.264 MP4 as rtsp://127.0.0.1:PORT/cam, for tests. Needs Debian's GStreamer
bindings, so run it with /usr/bin/python3 (not the venv):

    /usr/bin/python3 tests/rtsp_server.py VIDEO.mp4 PORT [USER:PASSWORD]

Each client gets its own pipeline, played from the start in real time (H.264 passed through,
not re-encoded); the stream ends with the file. Prints "ready" once it listens.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

video, port = sys.argv[1], sys.argv[2]
Gst.init(None)
server = GstRtspServer.RTSPServer(address="127.0.0.1", service=port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f'( filesrc location="{video}" ! qtdemux ! h264parse '
    "! rtph264pay name=pay0 pt=96 config-interval=1 )"
)
if len(sys.argv) > 3:  # require Basic auth with these credentials
    user, password = sys.argv[3].split(":", 1)
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    for permission in ("ACCESS", "CONSTRUCT"):
        name = getattr(GstRtspServer, f"RTSP_PERM_MEDIA_FACTORY_{permission}")
        permissions.add_permission_for_role("user", name, True)
    factory.set_permissions(permissions)
server.get_mount_points().add_factory("/cam", factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on 127.0.0.1:{port}")
print("ready", flush=True)
GLib.MainLoop().run()
