"""The invoice PDF keeps every character of a name and an address: Chinese, Japanese, Korean and emoji included.

With only fonts-dejavu-core installed (what CI and the image used to have) those characters were silently left
out of the PDF. The image and CI now install fonts-noto-cjk and fonts-noto-color-emoji, and invoice.css names them.
"""
from __future__ import annotations

import io
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from pypdf import PdfReader

from isp_admin.extensions import db
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.pdf import render_invoice_html, render_invoice_pdf
from tests.conftest import ROOT
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

NAME = "王小明 🚀 Zoë"
ADDRESS = "北京市朝阳区建国路88号 🏠\n서울 강남구 테헤란로\n東京都渋谷区 ひかりビル"
DEJAVU = Path("/usr/share/fonts/truetype/dejavu")


def issued_invoice() -> int:
    """An issued invoice for a customer whose name and address need CJK and emoji glyphs."""
    customer = CustomerFactory(name=NAME, billing_address=ADDRESS)
    SubscriptionFactory(customer=customer, plan=PlanFactory(), start_date=date(2026, 3, 1), billing_day=1,
                        next_bill_date=date(2026, 3, 1))
    invoice = billing.generate_invoice_for_customer(customer.id, date(2026, 3, 1))
    db.session.commit()
    return invoice.id


def pdf_text(pdf: bytes) -> str:
    """The text a reader copies out of the PDF (from its fonts' ToUnicode maps), whitespace squeezed."""
    return " ".join(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages).split())


def embedded_fonts(pdf: bytes) -> set[str]:
    """The base names of the fonts embedded on the PDF's pages, without their subset prefix."""
    names = set()
    for page in PdfReader(io.BytesIO(pdf)).pages:
        for font in page["/Resources"].get("/Font", {}).values():
            names.add(str(font.get_object()["/BaseFont"]).split("+", 1)[-1])
    return names


def expected_words() -> list[str]:
    return [*NAME.split(), *ADDRESS.split()]


def test_the_pdf_carries_cjk_and_emoji_in_the_customers_name_and_address(app):
    pdf = render_invoice_pdf(issued_invoice())

    text = pdf_text(pdf)
    missing = [word for word in expected_words() if word not in text]
    assert not missing, f"left out of the PDF: {missing}\n{text}"
    fonts = embedded_fonts(pdf)
    assert any(name.startswith("Noto-Sans-CJK") for name in fonts), fonts
    assert "Noto-Color-Emoji" in fonts, fonts
    # WeasyPrint draws a colour emoji as its bitmap: a drawn rocket is an image on the page.
    assert len(PdfReader(io.BytesIO(pdf)).pages[0].images) >= 1


def test_the_stylesheet_names_the_cjk_and_emoji_fonts_after_dejavu():
    css = (ROOT / "static" / "css" / "invoice.css").read_text()
    rule = css[css.index(".invoice-print {"):]
    families = rule[rule.index("font-family:") + len("font-family:"):rule.index(";")]
    names = [name.strip().strip('"') for name in families.split(",")]
    assert names[0] == "DejaVu Sans" and names[-1] == "sans-serif"
    assert names.index("Noto Sans CJK SC") < names.index("Noto Color Emoji") < names.index("sans-serif")


_RENDER = """
import io, sys
from pypdf import PdfReader
from weasyprint import CSS, HTML
html, css = sys.argv[1], sys.argv[2]
pdf = HTML(filename=html).write_pdf(stylesheets=[CSS(filename=css)])
sys.stdout.write(" ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages).split()))
"""


@pytest.mark.skipif(not DEJAVU.is_dir(), reason="fonts-dejavu-core is not installed")
def test_with_dejavu_alone_the_same_check_finds_the_characters_missing(app, tmp_path):
    """What CI and the image had before: fontconfig sees DejaVu only, and the CJK and emoji vanish."""
    page = tmp_path / "invoice.html"
    page.write_text(render_invoice_html(issued_invoice()), encoding="utf-8")
    config = tmp_path / "fonts.conf"
    config.write_text(f"""<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig><dir>{DEJAVU}</dir><cachedir>{tmp_path / "fc-cache"}</cachedir></fontconfig>
""")
    result = subprocess.run([sys.executable, "-c", _RENDER, str(page), str(ROOT / "static" / "css" / "invoice.css")],
                            capture_output=True, text=True, timeout=120, check=True,
                            env={"FONTCONFIG_FILE": str(config), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})

    assert "Zoë" in result.stdout  # DejaVu has Latin
    assert [word for word in expected_words() if word in result.stdout] == ["Zoë"]
