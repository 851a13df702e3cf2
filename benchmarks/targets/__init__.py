"""Peer configurations (nginx, Varnish, Caddy) and development certificates for the benchmark."""

from benchmarks.targets.configs import render_caddyfile, render_nginx, render_vcl
from benchmarks.targets.tls import CertFiles, make_dev_cert

__all__ = ["CertFiles", "make_dev_cert", "render_caddyfile", "render_nginx", "render_vcl"]
