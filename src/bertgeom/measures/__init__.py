"""The measurements of DESIGN section 3: pure functions on tensors and mergeable accumulators."""
