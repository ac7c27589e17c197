"""nginx as a reverse proxy on loopback: the well-known reference point for a relay's cost."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from bench.procs import ProcessGroup, Server

_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 16384;
{user}
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 64m;
    upstream bench_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


def nginx_version() -> str | None:
    binary = nginx_binary()
    if binary is None:
        return None
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"nginx/(\S+)", done.stderr + done.stdout)
    return match.group(1) if match else None


def start_nginx(group: ProcessGroup, port: int, upstream_port: int) -> Server:
    """Write a config into the group's work directory and run nginx in the foreground."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed")
    prefix = group.workdir / "nginx"
    prefix.mkdir(exist_ok=True)
    # As root, nginx would run its worker as "nobody", who cannot use the private temp paths.
    user = "user root;" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(_CONF.format(dir=prefix, port=port, upstream_port=upstream_port, user=user))
    return group.start(
        "nginx",
        [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
        port,
    )
