"""teachers: every teacher a run distils from.

The teacher zoo (any timm architecture, trained once, cached with a checksum), importing external weights, and
the cache of teacher outputs that pays the teacher's forward pass once.
"""
