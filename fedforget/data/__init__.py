"""A site's data: the one way to open its split, fastMRI datasets and batch streams, synthetic sites."""
