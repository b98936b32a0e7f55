"""Serve an H.264 MP4 as rtsp://127.0.0.1:PORT/cam, or receive a stream published to it, for
tests. Needs Debian's GStreamer bindings, so run it with /usr/bin/python3 (not the venv):

    /usr/bin/python3 tests/rtsp_server.py VIDEO.mp4 PORT [USER:PASSWORD]
    /usr/bin/python3 tests/rtsp_server.py --record DIR PORT

Serving: each client gets its own pipeline, played from the start in real time (H.264 passed
through, not re-encoded); the stream ends with the file. Recording (a RECORD mount, what
MediaMTX or go2rtc offer a publisher): each publication's H.264 is written as a raw byte-stream
to DIR/received-<ns>-N.h264 as it arrives (readable while it grows, and after a SIGKILL).
Prints "ready" once it listens.
"""

import os
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
record = sys.argv[1] == "--record"
target, port = sys.argv[1 + record], sys.argv[2 + record]
server = GstRtspServer.RTSPServer(address="127.0.0.1", service=port)
server.get_thread_pool().set_max_threads(8)
factory = GstRtspServer.RTSPMediaFactory()
if record:
    factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
    factory.set_launch(
        "( rtph264depay name=depay0 ! video/x-h264,stream-format=byte-stream,alignment=au "
        "! filesink name=sink buffer-mode=unbuffered sync=false async=false )"
    )
    publications = []

    def name_file(_factory, media):
        # Unique across restarts of this server, in the order received.
        path = os.path.join(target, f"received-{time.time_ns()}-{len(publications)}.h264")
        publications.append(path)
        media.get_element().get_by_name("sink").set_property("location", path)

    factory.connect("media-configure", name_file)
else:
    factory.set_launch(
        f'( filesrc location="{target}" ! qtdemux ! h264parse '
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
if len(sys.argv) > 3 and not record:  # require Basic auth with these credentials
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
