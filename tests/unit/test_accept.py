"""Accept negotiation: Next's getSupportedMimeType over @hapi/accept.

Next's code: ``getSupportedMimeType`` in ``packages/next/src/server/image-optimizer.ts``.
"""

from __future__ import annotations

import pytest

from handler.contract import errors
from handler.contract.accept import negotiate
from handler.contract.errors import ImageError

WEBP = ("image/webp",)
BOTH = ("image/avif", "image/webp")
OLD_SAFARI = "image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"


@pytest.mark.parametrize(
    ("formats", "accept", "expected"),
    [
        # hapi's choice among ``formats``, kept only if the header names it verbatim
        (WEBP, None, ""),
        (BOTH, None, ""),
        (WEBP, "*/*", ""),
        (WEBP, "image/*", ""),
        (BOTH, "text/html", ""),
        (WEBP, "image/webp", "image/webp"),
        (WEBP, "image/webp,*/*", "image/webp"),
        (WEBP, "image/avif,image/webp,*/*", "image/webp"),
        (BOTH, "image/avif,image/webp,*/*", "image/avif"),
        (BOTH, "image/webp,image/avif", "image/avif"),
        (("image/webp", "image/avif"), "image/webp,image/avif", "image/avif"),
        (BOTH, "image/avif;q=0.5,image/webp", "image/webp"),
        (BOTH, "image/webp;q=1,image/avif;q=0.99", "image/webp"),
        (BOTH, "image/*,image/webp;q=0.5", ""),
        (BOTH, "*/*,image/webp;q=0.5", ""),
        (WEBP, "image/*,image/webp;q=0.5", "image/webp"),
        (WEBP, "*/*,image/webp;q=0.5", "image/webp"),
        (BOTH, "IMAGE/WEBP", ""),
        (WEBP, "image/webp; level=1", ""),
        (WEBP, OLD_SAFARI, ""),
        # what browsers send
        (BOTH, "image/avif,image/webp,image/apng,image/*,*/*;q=0.8", "image/avif"),
        (WEBP, "image/webp,image/apng,image/*,*/*;q=0.8", "image/webp"),
        (WEBP, "image/invalid", ""),
        # hapi details
        (WEBP, "", ""),
        (WEBP, "image/webp;q=0", ""),
        (BOTH, "image/avif;q=0,image/webp", "image/webp"),
        (BOTH, "image/avif;q=0,image/*", ""),  # *: avif excluded, webp fails the substring test
        (WEBP, "image/webp;q=2", "image/webp"),  # > 1 becomes 1
        (BOTH, "image/avif;q=-1,image/webp;q=0.9", "image/avif"),  # < 0.001 becomes 1
        (BOTH, "image/avif;q=0.0001,image/webp;q=0.9", "image/avif"),
        (BOTH, "image/avif;q=abc,image/webp;q=0.9", "image/avif"),  # NaN becomes 1
        (BOTH, "image/avif;q=0.5x,image/webp;q=0.4", "image/avif"),  # parseFloat prefix
        (BOTH, "image/avif;q=-0,image/webp", "image/webp"),  # -0 is a refusal
        (BOTH, "image/avif;Q=0.1,image/webp;q=0.2", "image/webp"),
        (WEBP, "image/webp\t;\tq=0.9", "image/webp"),
        (WEBP, "image/webp, image/webp; a=1", ""),  # the parameterised range sorts first
        (WEBP, ",,image/webp,", "image/webp"),
        (WEBP, "image/webp/extra", ""),
        (WEBP, '"image/webp"', ""),
        ((), "image/webp", ""),
    ],
)
def test_negotiate(formats: tuple[str, ...], accept: str | None, expected: str) -> None:
    assert negotiate(accept, formats) == expected


@pytest.mark.parametrize(
    "accept", ["image/webp;level=1", 'image/webp;x="a b"', "image/webp;level=1;q=0.9"]
)
def test_parameters_are_stripped_from_the_result(accept: str) -> None:
    # Next returns e.g. "image/webp;level=1"; we deliberately return the configured format.
    assert negotiate(accept, WEBP) == "image/webp"


@pytest.mark.parametrize(
    "accept",
    ["image/webp;foo", "image/webp;q=", "image/webp;", "image/webp;a=b=c", "text/html,image/png;x"],
)
def test_malformed_parameter_is_a_400(accept: str) -> None:
    with pytest.raises(ImageError) as caught:
        negotiate(accept, WEBP)
    assert (caught.value.status, caught.value.message) == (400, errors.ACCEPT_INVALID)


def test_invalid_media_ranges_are_skipped_before_parameters() -> None:
    assert negotiate("nonsense;foo,image/webp", WEBP) == "image/webp"
