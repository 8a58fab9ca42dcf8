"""Search over the indexed chunks: lexical (BM25), semantic (embeddings), and both.

- :mod:`.fusion` — pure ranking: reciprocal-rank fusion, collapsing to documents;
- :mod:`.lexical` — BM25 in SQL over the postings the chunk triggers keep;
- :mod:`.semantic` — nearest neighbours: pgvector's HNSW index where the database has
  it, otherwise an exact scan in this process over a tenant's vectors;
- :mod:`.service` — one search request: embeds the query, runs the lists, fuses them,
  and fetches the hits' documents and snippets;
- :mod:`.results` — the request and the answer, as they travel over HTTP.
"""
