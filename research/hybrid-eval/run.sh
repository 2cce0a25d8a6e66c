#!/bin/sh
# The product's own `tempscale-rag eval` with its default rows (BM25, tau=1, the default taus, and both fused with
# BM25: what `search` does), on the shared sets, on this 2-core CPU. QMSum's dense rows need ~20M tokens embedded
# (hours here), so QMSum is run with --retrieval lexical (the BM25 row: no embedding) when no GPU is available.
set -e
D=${1:-../shared/data}
O=research/hybrid-eval
for set in bamboo; do
  /usr/bin/time -f "%e s" tempscale-rag eval $D/$set --device cpu --no-per-query --out $O/$set > $O/$set.log 2>&1
done
tempscale-rag eval passkey --device cpu --no-per-query --out $O/passkey > $O/passkey.log 2>&1
tempscale-rag eval needle --haystack $D/paul_graham_essays/txt --needles $D/needles/needles_100.tsv --device cpu --no-per-query --out $O/needle > $O/needle.log 2>&1
tempscale-rag eval $D/qmsum --retrieval lexical --device cpu --no-per-query --out $O/qmsum-lexical > $O/qmsum-lexical.log 2>&1
