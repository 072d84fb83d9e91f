"""Building blocks shared by every model: embeddings, attention, switchers, layers, poolers."""
