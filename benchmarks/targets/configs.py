"""Configuration templates for the peers the benchmark compares the edge with.

Each peer gets the least configuration that makes it a fair, working cache (or
file server) in front of the same origin; every setting beyond the package
defaults is here with its reason. Templates use ``str.format`` fields.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["render_caddyfile", "render_nginx", "render_vcl"]

# nginx: one cache zone, keep-alive to the origin, the cache status in X-Cache,
# no cap on requests per client connection (the other servers have none).
# proxy_cache_key leaves out $scheme so the cleartext, h2c and TLS listeners
# share one cache (the edge's key has one scheme too). Bodies live in files
# under the prefix (nginx's design: served from the page cache with sendfile).
NGINX_CONF = """
{user}
worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;  # default 1000: nginx would close h1/h2 connections mid-run
    proxy_cache_path {prefix}/cache keys_zone=edge:64m max_size=2g inactive=1h;
    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{h1_port} reuseport backlog=4096;
        listen 127.0.0.1:{h2c_port} http2 reuseport backlog=4096;
        listen 127.0.0.1:{tls_port} ssl http2 reuseport backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_cache edge;
            proxy_cache_key $proxy_host$request_uri;
            add_header X-Cache $upstream_cache_status;
        }}
    }}
}}
"""

# Varnish: the built-in VCL plus an X-Cache header from obj.hits. Started with
# http_gzip_support off (so Accept-Encoding reaches the origin and the br
# variant is cached, as with the other caches) and feature=+http2 (h2c).
VCL = """vcl 4.1;

backend origin {{
    .host = "127.0.0.1";
    .port = "{origin_port}";
}}

sub vcl_deliver {{
    if (obj.hits > 0) {{
        set resp.http.X-Cache = "HIT";
    }} else {{
        set resp.http.X-Cache = "MISS";
    }}
}}
"""

# Caddy: a plain file server over the same files (no cache: it is the
# "serve from local disk" reference), precompressed br/gzip siblings, h2c on
# the cleartext port, and HTTPS with h2 and h3 from its internal CA.
CADDYFILE = """{{
    admin off
    default_bind 127.0.0.1
    auto_https disable_redirects
    skip_install_trust
    local_certs
    storage file_system {{
        root {state}
    }}
    servers {{
        protocols h1 h2 h2c h3
    }}
}}

http://127.0.0.1:{http_port} {{
    root * {site}
    file_server {{
        precompressed br gzip
    }}
}}

https://127.0.0.1:{https_port} {{
    tls internal
    root * {site}
    file_server {{
        precompressed br gzip
    }}
}}
"""


def render_nginx(
    prefix: Path,
    *,
    origin_port: int,
    h1_port: int,
    h2c_port: int,
    tls_port: int,
    cert: Path,
    key: Path,
    workers: int = 1,
    as_root: bool = False,
) -> str:
    """nginx.conf for a proxy_cache in front of the origin (run as root: workers stay root)."""
    return NGINX_CONF.format(
        user="user root;" if as_root else "",
        workers=workers,
        prefix=prefix,
        origin_port=origin_port,
        h1_port=h1_port,
        h2c_port=h2c_port,
        tls_port=tls_port,
        cert=cert,
        key=key,
    )


def render_vcl(*, origin_port: int) -> str:
    """The VCL for Varnish in front of the origin."""
    return VCL.format(origin_port=origin_port)


def render_caddyfile(*, site: Path, state: Path, http_port: int, https_port: int) -> str:
    """Caddyfile serving ``site`` on a cleartext and an HTTPS (h2 + h3) port."""
    return CADDYFILE.format(site=site, state=state, http_port=http_port, https_port=https_port)
