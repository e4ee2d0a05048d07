"""A Python HTTP server on pminit's sockets, using systemd's LISTEN_FDS
protocol (the same one systemd socket activation uses).

    pminit -i 4 -l 8000 -- python3 server.py

pminit binds port 8000 and starts 4 copies of this program; each finds the
socket at fd 3 (LISTEN_FDS=1), checks that LISTEN_PID is its own pid, and
accepts on it. Only the standard library is needed.
"""
import http.server
import os
import signal
import socket
import sys

SD_LISTEN_FDS_START = 3


def listen_fds():
    """The sockets passed by the service manager (pminit, systemd)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0"))
    return [socket.socket(fileno=SD_LISTEN_FDS_START + i) for i in range(count)]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"pid={os.getpid()} slot={os.environ.get('PMINIT_WORKER')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.HTTPServer):
    def __init__(self, sock):
        # Take the inherited listening socket instead of binding one.
        super().__init__(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket = sock


def main():
    sockets = listen_fds()
    if not sockets:
        sys.exit("server.py: no socket from pminit (run it as: pminit -l 8000 -- python3 server.py)")
    server = Server(sockets[0])
    # pminit asks workers to stop with SIGINT: finish the current request, exit 0.
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    # One write per line: several workers share stdout.
    os.write(1, f"listening pid={os.getpid()} slot={os.environ.get('PMINIT_WORKER')}\n".encode())
    server.serve_forever()


if __name__ == "__main__":
    main()
