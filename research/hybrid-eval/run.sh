#!/bin/sh
# The product's own `tempscale-rag eval` with its default rows (BM25 alone, tau=1, the default taus, and both of those
# fused with BM25: what `search` does), as run for issue 25 on the 2-core development CPU (no GPU was available).
# QMSum's dense rows need ~20M tokens embedded (hours here): QMSum was run with --retrieval lexical (the BM25 row,
# nothing embedded; its 499-token chunks are the default index's) for both query sets.
set -e
D=${1:-../shared/data}
O=research/hybrid-eval
tempscale-rag eval $D/bamboo --device cpu --no-per-query --out $O/bamboo                                   # 457 s
tempscale-rag eval $D/qmsum --retrieval lexical --chunk-tokens 499 --device cpu --no-per-query --out $O/qmsum-lexical   # 23 s
Q=$(mktemp -d); for f in corpus.jsonl qrels.tsv; do ln -s "$(realpath $D/qmsum/$f)" $Q/$f; done
ln -s "$(realpath $D/qmsum/queries_questions.jsonl)" $Q/queries.jsonl
tempscale-rag eval $Q --retrieval lexical --chunk-tokens 499 --device cpu --no-per-query --out $O/qmsum-questions-lexical
tempscale-rag eval passkey --device cpu --no-per-query --out $O/passkey
tempscale-rag eval needle --haystack $D/paul_graham_essays/txt --needles $D/needles/needles_100.tsv --device cpu \
  --no-per-query --out $O/needle
