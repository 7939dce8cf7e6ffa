import io
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

try:  # the runtime tests (-m runtime) also run in a venv without torch (the base install)
    import torch
except ImportError:
    torch = None

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))

if torch is not None:
    torch.set_num_threads(2)


def word_image(text: str, size: int = 28, mode: str = "L") -> Image.Image:
    """A clean black-on-white word image drawn with Pillow's bundled font."""
    font = ImageFont.load_default(size=size)
    l, t, r, b = font.getbbox(text)
    img = Image.new("RGB", (r - l + 8, b - t + 8), (255, 255, 255))
    ImageDraw.Draw(img).text((4 - l, 4 - t), text, fill=(0, 0, 0), font=font)
    return img.convert(mode)


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def word_folder(tmp_path: Path) -> Path:
    """A gt.txt folder: 6 good words, one corrupt image, one empty file, one label emptied by normalisation."""
    d = tmp_path / "words"
    (d / "img").mkdir(parents=True)
    lines = []
    for i, w in enumerate(["Hello", "WORLD", "it's", "2024", "a b", "zoo"]):
        word_image(w).save(d / "img" / f"{i}.png")
        lines.append(f"img/{i}.png {w}")
    (d / "img" / "bad.png").write_bytes(png_bytes(word_image("bad"))[:60])  # truncated PNG
    lines.append("img/bad.png bad")
    (d / "img" / "empty.jpg").write_bytes(b"")
    lines.append("img/empty.jpg empty")
    word_image("!!").save(d / "img" / "punct.png")
    lines.append("img/punct.png !!")
    (d / "gt.txt").write_text("\n".join(lines) + "\n")
    return d


@pytest.fixture(scope="session")
def crnn_seeded_ckpt(tmp_path_factory) -> Path:
    """meijieru-layout checkpoint with the fixture's seeded weights."""
    from seeded_weights import load_keys_tsv, seeded_state_dict

    p = tmp_path_factory.mktemp("ckpt") / "crnn_seeded.pth"
    torch.save(seeded_state_dict(load_keys_tsv(FIXTURES / "crnn_meijieru" / "keys.tsv")), p)
    return p


@pytest.fixture(scope="module")
def one_torch_thread():
    """PyTorch's LSTM with 2 OpenMP threads is ~100x slower on a shared 2-core machine; 1 thread is exact too."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
