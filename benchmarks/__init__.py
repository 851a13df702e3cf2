"""Side-by-side load runs against real peers (nginx, Varnish, Caddy)."""
