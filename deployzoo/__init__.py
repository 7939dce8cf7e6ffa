"""deployzoo: trained vision models to fast, verified inference on open runtimes."""

__version__ = "0.1.0"


def load(model: str = "crnn", checkpoint=None, engine=None, **kwargs):
    """Load a model for inference: ``deployzoo.load("crnn", checkpoint="crnn.pth")("word.png").text``."""
    from deployzoo.predict import load as _load

    return _load(model, checkpoint=checkpoint, engine=engine, **kwargs)


__all__ = ["load", "__version__"]
