"""Protocol fronts: each turns its wire's requests into one ``Request`` and calls ``edge.core``.

``request`` and ``hit`` are the toolkit every front uses (checking and building the
request, the memoised head of a cached hit); ``h1``, ``h2``, ``h3`` and ``asgi`` are the
fronts themselves. Nothing here holds a cache rule.
"""
