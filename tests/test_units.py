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
        (4 * MiB, 4 * MiB),
        (None, None),
        ("none", None),
    ],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize(
    "bad", ["lots", "-5GB", "0", "-1GB", "5 parsecs", "GB", 0, -3, "32", 24, "1048575"]
)
def test_parse_bytes_rejects_with_the_input_name(bad):
    with pytest.raises(ValueError, match="^budget: "):
        parse_bytes(bad, name="budget")


def test_display_units_are_binary():
    assert fmt_bytes(3 * MiB) == "3.0 MiB"
    assert fmt_bytes(int(1.5 * GiB)) == "1.50 GiB"
    assert fmt_bytes(None) == "n/a"
    assert gb_to_bytes(24) == 24_000_000_000


def test_a_budget_without_its_unit_is_refused_with_the_unit_it_probably_lost():
    # "host_budget=32" meant 32 GiB, not 32 bytes: below 1 MiB a bare number is a lost unit
    with pytest.raises(ValueError, match=r"^host_budget: .*less than 1 MiB.*did you mean 32GiB\?"):
        parse_bytes("32", name="host_budget")
    assert parse_bytes("1048576") == MiB  # from 1 MiB up a bare number stays bytes
