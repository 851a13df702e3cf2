"""Talking to the shield or origin: the pooled client, fills and collapsing."""
