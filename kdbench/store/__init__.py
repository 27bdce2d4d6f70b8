"""store: what a run leaves behind.

Records (content-hashed run ids, atomic writes, never overwritten by another config; assembled block by block in
`record_builder`, brought from older schemas on load by `migrations`), attempts, exports and the code fingerprint
that keys a record to the code that made its numbers.
"""
