"""Data: image folders, normalization, augmentation, batches and MNIST.

Images are decoded once into memory as uint8 (N, 3, S, S); each batch is
moved to the backend as uint8, then turned into normalized float32 (or
float64) NCHW there, augmented on the device when training.

    folders.py    ImageFolder, load_image, class_folders
    normalize.py  channel_stats, Normalize
    augment.py    Augment, resize, bilinear_sample
    loader.py     DataLoader and the loader protocol the Trainer relies on (sharded for data-parallel runs)
    cache.py      the decoded-image cache on disk (memory-mapped; ImageFolder(cache=...))
    mnist.py      read_mnist
    bundled.py    bundled_data: where the examples find the bundled data sets ($MINICNN_DATA)
"""
from .augment import Augment, bilinear_sample, resize
from .bundled import bundled_data
from .folders import IMAGE_EXTENSIONS, ImageFolder, class_folders, load_image
from .loader import DataLoader
from .mnist import read_mnist
from .normalize import Normalize, channel_stats

__all__ = ["Augment", "bilinear_sample", "resize", "bundled_data", "IMAGE_EXTENSIONS", "ImageFolder", "class_folders",
           "load_image", "DataLoader", "read_mnist", "Normalize", "channel_stats"]
