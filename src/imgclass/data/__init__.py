"""Datasets: folder layout, labels, a deterministic split, decoding once, checks."""
from .checks import check_dataset, count_table
from .folder import SPLIT_FILE, Dataset, find_dataset, follow_split, hash_split, read_split, write_split
from .images import ImageIndex, Images, decode_images, index_images, index_readable, unreadable

__all__ = ["Dataset", "ImageIndex", "Images", "SPLIT_FILE", "check_dataset", "count_table", "decode_images",
           "find_dataset", "index_images", "index_readable", "unreadable", "follow_split", "hash_split", "read_split",
           "write_split"]
