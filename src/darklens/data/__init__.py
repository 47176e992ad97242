"""Data on disk: HDF5 shards and DeepLense class folders, read safely, as torch datasets."""
