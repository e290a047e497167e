"""imgclass: everyday image classification, from jetson-inference's Hello AI World to any machine.

Example:
    >>> import imgclass
    >>> net = imgclass.Classifier()                                   # efficientnet-lite0, offline
    >>> net.classify(imgclass.load_image("cat.jpg"), topk=5)  # doctest: +SKIP
"""
from .classifier import Classifier, Prediction, load_image, save_image
from .errors import ImgclassError

__version__ = "0.1.0"
__all__ = ["Classifier", "Prediction", "ImgclassError", "load_image", "save_image", "__version__"]
