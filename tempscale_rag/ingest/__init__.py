"""Ingestion: finding and reading documents, chunking them to the model window, and indexing them into a store."""
