import pytest

from sam2tune.units import GiB, MiB, fmt_bytes, gb_to_bytes, parse_bytes


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2GiB", 2 * GiB),
        ("512MiB", 512 * MiB),
        ("24GB", 24 * 10**9),
        ("1.5 GiB", int(1.5 * GiB)),
        ("1073741824", GiB),
        (4096, 4096),
        (None, None),
        ("none", None),
    ],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["lots", "-5GB", "0", "-1GB", "5 parsecs", "GB", 0, -3])
def test_parse_bytes_rejects_with_the_input_name(bad):
    with pytest.raises(ValueError, match="^budget: "):
        parse_bytes(bad, name="budget")


def test_display_units_are_binary():
    assert fmt_bytes(3 * MiB) == "3.0 MiB"
    assert fmt_bytes(int(1.5 * GiB)) == "1.50 GiB"
    assert fmt_bytes(None) == "n/a"
    assert gb_to_bytes(24) == 24_000_000_000
