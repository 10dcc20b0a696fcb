"""Container labels as ZPL II for Zebra thermal printers, from the same layout as the PDF.

The QR's module size is a whole number of printer dots, so the QR box is chosen per
resolution (the largest whole number of dots per module within the PDF's QR, never below
the stock's minimum) and the text is laid out around it. Text is
sent as UTF-8 (``^CI28``) and every field goes through ``^FH``: anything outside printable
ASCII, and ``^``, ``~``, ``_`` and ``\\``, travels as ``_XX`` hex, so user text can neither
be mangled nor inject printer commands. Each text block keeps its own ``^FB`` so the
printer wraps it within the width and line count the layout gave it.
"""

from __future__ import annotations

import math

from labels.data import LabelData
from labels.layout import QR_MINIMUM, LabelLayout, largest_qr, layout_label
from labels.qr import QUIET_ZONE, qr_matrix

MAX_MAGNIFICATION = 10  # ^BQ accepts 1 to 10 dots per module
SAFE_BYTES = frozenset(range(0x20, 0x7F)) - {ord("^"), ord("~"), ord("_"), ord("\\")}


def zpl_escape(text: str) -> str:
    """``text`` as ^FH field data: UTF-8, with every unsafe byte written as ``_XX``."""
    return "".join(chr(byte) if byte in SAFE_BYTES else f"_{byte:02X}" for byte in text.encode("utf-8"))


def _magnification(label: LabelData, modules: int, dpi: int) -> int:
    """Dots per module: the QR no larger than the PDF's (``largest_qr``), at least the stock's minimum,
    at most what ^BQ allows."""
    dots_per_point = dpi / 72
    wanted = math.floor(largest_qr(label) * dots_per_point / modules)
    needed = math.ceil(QR_MINIMUM[label.stock] * dots_per_point / modules)
    if needed > MAX_MAGNIFICATION:
        raise ValueError(
            f"At {dpi} dpi a {label.stock} label's QR needs {needed} dots per module; ZPL allows {MAX_MAGNIFICATION}."
        )
    return min(max(wanted, needed, 1), MAX_MAGNIFICATION)


def _commands(label: LabelData, layout: LabelLayout, dpi: int, magnification: int) -> list[str]:
    scale = dpi / 72

    def dots(points: float) -> int:
        return round(points * scale)

    def top(points: float) -> int:
        return dots(layout.height - points)

    quiet = QUIET_ZONE * magnification
    commands = [
        "^XA",
        "^CI28",
        f"^PW{dots(layout.width)}",
        f"^LL{dots(layout.height)}",
        "^LH0,0",
        f"^FO{dots(layout.qr.x) + quiet},{top(layout.qr.y1) + quiet}^BQN,2,{magnification}^FDMA,{label.code}^FS",
    ]
    for block in layout.blocks:
        height = dots(block.size)
        slot = block.box.height / len(block.lines)
        y = top(block.box.y1) + dots((slot - block.size) / 2)
        field = f"^A0N,{height},{height}^FB{dots(block.box.width - 2 * (block.x - block.box.x))},{len(block.lines)},"
        field += f"{dots(slot) - height},L,0^FH^FD{zpl_escape(block.text)}^FS"
        if block.inverse:
            box_height = dots(block.box.height)
            commands.append(
                f"^FO{dots(block.box.x)},{top(block.box.y1)}^GB{dots(block.box.width)},{box_height},{box_height}^FS"
            )
            field = "^FR" + field
        commands.append(f"^FO{dots(block.x)},{y}{field}")
    commands.append("^XZ")
    return commands


def render_zpl(label: LabelData, dpi: int = 203) -> str:
    """One label as a ZPL II program (``^XA`` ... ``^XZ``) for a printer of ``dpi`` dots per inch.

    Raises LabelOverflow when the text cannot fit, and ValueError when the QR cannot be
    printed at its minimum size at that resolution.
    """
    if dpi <= 0:
        raise ValueError(f"{dpi} dpi is not a printer resolution.")
    modules = len(qr_matrix(label.code))  # quiet zone included
    magnification = _magnification(label, modules, dpi)
    qr_size = modules * magnification * 72 / dpi
    layout = layout_label(label, qr_size=qr_size)
    return "\n".join(_commands(label, layout, dpi, magnification)) + "\n"
