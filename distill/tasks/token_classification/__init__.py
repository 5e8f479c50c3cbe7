"""Token classification (named-entity recognition): BIO-tagged words, a token-classification
head, entity-level evidence (seqeval, strict IOB2), and entities served without torch.

Submodules are imported on demand: the runner must stay usable without torch.
"""
