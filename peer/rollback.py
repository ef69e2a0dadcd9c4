"""Offers that a browser can answer after rolling back an offer of its own. Plain text, no I/O.

A classic tutorial client offers as soon as it joins; alone in the room, that offer reaches
nobody, and the client waits in ``have-local-offer``. When our offer then comes, Chromium
rolls its own back and answers ours, but it keeps the mid its own data section had (the
number of tracks it added first: "1" for a camera, "2" for camera and microphone) and takes
our data channel only under that mid. Under a larger one it refuses it (``m=application 0``);
under a smaller one it fails to answer at all.

Our media sections take the mids from "0" up, so the data section can only have a larger
mid; which one the other side wants is unknown. So the offer goes out *widened*: the data
section, then copies of it under the next ``EXTRA_DATA_SECTIONS`` mids. Chromium accepts the
one it wants and refuses the others; ``narrow_answer`` keeps the accepted one under the mid
aiortc gave it, so aiortc sees the answer to the offer it made. Stacks that answer each
section (aiortc among them) cannot answer a widened offer, so the caller falls back to the
plain one when no answer comes; our own peers read it with ``single_data_section``.
"""

from __future__ import annotations

import re

EXTRA_DATA_SECTIONS = 2
"""Copies of the data section in a widened offer: enough for classic clients with up to
two tracks more than we send."""

_MID = re.compile(r"^a=mid:(\S+)", re.MULTILINE)
_BUNDLE = re.compile(r"^a=group:BUNDLE(?: [^\r\n]*)?", re.MULTILINE)


def widen_offer(sdp: str) -> str:
    """``sdp`` (an offer by aiortc, its data section last) with copies of the data section
    under the mids that follow; unchanged if it has no data section."""
    head, sections = _split(sdp)
    data = [section for section in sections if _is_data(section)]
    if len(data) != 1 or not all(_mid(section).isdigit() for section in sections):
        return sdp
    first = max(int(_mid(section)) for section in sections) + 1
    copies = [_with_mid(data[0], str(mid)) for mid in range(first, first + EXTRA_DATA_SECTIONS)]
    head = _with_bundle(head, _bundle(head) + [_mid(copy) for copy in copies])
    return _join(head, sections + copies)


def narrow_answer(answer: str, offer: str) -> str:
    """The answer to a widened offer as an answer to ``offer``, the plain one aiortc made:
    the data section the other side accepted (else the first) under the mid of ``offer``'s,
    the others gone. An answer with more data sections than the widened offer had is no
    answer to it, and is left for aiortc to refuse."""
    head, sections = _split(answer)
    ours = [_mid(section) for section in _split(offer)[1] if _is_data(section)]
    data = [section for section in sections if _is_data(section)]
    if len(ours) != 1 or not 2 <= len(data) <= 1 + EXTRA_DATA_SECTIONS:
        return answer
    chosen = next((section for section in data if not _is_refused(section)), data[0])
    kept = [section for section in sections if not _is_data(section) or section is chosen]
    data_mids = {_mid(section) for section in data}
    bundle = [mid for mid in _bundle(head) if mid not in data_mids]
    if not _is_refused(chosen):
        bundle.append(ours[0])
    return _join(_with_bundle(head, bundle), [_with_mid(s, ours[0]) if s is chosen else s for s in kept])


def single_data_section(offer: str) -> str:
    """A widened offer from one of our own peers with only its first data section: what
    aiortc can answer. Our side of the call narrows the answer back."""
    head, sections = _split(offer)
    data = [section for section in sections if _is_data(section)]
    if len(data) < 2:
        return offer
    extra = {_mid(section) for section in data[1:]}
    head = _with_bundle(head, [mid for mid in _bundle(head) if mid not in extra])
    return _join(head, [section for section in sections if not _is_data(section) or section is data[0]])


def refuses_data(answer: str) -> bool:
    """Whether an answer refuses the data channel (its data section has port 0)."""
    return any(_is_data(section) and _is_refused(section) for section in _split(answer)[1])


def bundle_refused_data(answer: str) -> str:
    """The answer with its refused data section put in the BUNDLE group. Left outside it,
    aiortc gives that section an ICE transport of its own that nobody answers, so the
    connection stays ``connecting`` although media flows; inside, it shares the media's
    transport, and its SCTP association simply never starts."""
    head, sections = _split(answer)
    refused = [_mid(section) for section in sections if _is_data(section) and _is_refused(section)]
    bundle = _bundle(head)
    bundled = set(bundle)
    missing = [mid for mid in refused if mid not in bundled]
    if not bundle or not missing:
        return answer
    return _join(_with_bundle(head, bundle + missing), sections)


def _split(sdp: str) -> tuple[str, list[str]]:
    head, *sections = sdp.rstrip("\r\n").split("\r\nm=")
    return head, ["m=" + section for section in sections]


def _join(head: str, sections: list[str]) -> str:
    return "\r\n".join([head, *sections]) + "\r\n"


def _is_data(section: str) -> bool:
    return section.startswith("m=application ")


def _is_refused(section: str) -> bool:
    return section.startswith("m=application 0 ")


def _mid(section: str) -> str:
    found = _MID.search(section)
    return found.group(1) if found else ""


def _with_mid(section: str, mid: str) -> str:
    return re.sub(r"^a=mid:\S+", lambda _: f"a=mid:{mid}", section, count=1, flags=re.MULTILINE)


def _bundle(head: str) -> list[str]:
    found = _BUNDLE.search(head)
    return found.group(0).split()[1:] if found else []


def _with_bundle(head: str, mids: list[str]) -> str:
    line = " ".join(["a=group:BUNDLE", *mids])  # mids from the other side: not a template
    return re.sub(r"^a=group:BUNDLE[^\r\n]*", lambda _: line, head, count=1, flags=re.MULTILINE)
