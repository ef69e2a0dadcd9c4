"""peer.rollback: the widened offer and the narrowed answer, as text (no sockets)."""

from peer import rollback


def offer(*kinds: str) -> str:
    """An offer as aiortc writes it: a section per kind, mids from "0", all bundled."""
    mids = [str(i) for i in range(len(kinds))]
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE " + " ".join(mids)]
    for mid, kind in zip(mids, kinds):
        if kind == "application":
            lines += ["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0", f"a=mid:{mid}",
                      "a=sctp-port:5000"]
        else:
            lines += [f"m={kind} 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", f"a=mid:{mid}", "a=sendrecv"]
    return "\r\n".join(lines) + "\r\n"


def sections(sdp: str) -> list[tuple[str, str]]:
    """(m-line, mid) per section."""
    out, mline = [], ""
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            mline = line
        elif line.startswith("a=mid:"):
            out.append((mline, line[6:]))
    return out


def bundle(sdp: str) -> list[str]:
    return next(line for line in sdp.split("\r\n") if line.startswith("a=group:BUNDLE")).split()[1:]


def answer_to(widened: str, accept: str) -> str:
    """Chromium's answer after its rollback: the data section under ``accept`` taken, the others refused."""
    text = widened
    for mline, mid in sections(widened):
        if mline.startswith("m=application") and mid != accept:
            text = text.replace(f"{mline}\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\n",
                                f"m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\n")
    taken = [mid for mline, mid in sections(widened) if not mline.startswith("m=application") or mid == accept]
    return text.replace("a=group:BUNDLE " + " ".join(bundle(widened)), "a=group:BUNDLE " + " ".join(taken))


def test_widened_offer_carries_the_data_section_under_the_next_mids():
    plain = offer("video", "application")
    widened = rollback.widen_offer(plain)
    assert [mid for _, mid in sections(widened)] == ["0", "1", "2", "3"]
    assert [m.split()[0] for m, _ in sections(widened)] == ["m=video", "m=application", "m=application",
                                                           "m=application"]
    assert bundle(widened) == ["0", "1", "2", "3"]
    assert widened.startswith(plain.split("a=group")[0]) and widened.endswith("a=sctp-port:5000\r\n")


def test_offers_without_one_numbered_data_section_are_left_alone():
    for plain in (offer("video", "audio"), offer("video", "application").replace("a=mid:0", "a=mid:v")):
        assert rollback.widen_offer(plain) == plain


def test_the_accepted_data_section_answers_ours():
    plain = offer("video", "application")
    answer = answer_to(rollback.widen_offer(plain), accept="2")
    narrowed = rollback.narrow_answer(answer, plain)
    assert sections(narrowed) == [("m=video 9 UDP/TLS/RTP/SAVPF 96", "0"),
                                  ("m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "1")]
    assert bundle(narrowed) == ["0", "1"]
    assert not rollback.refuses_data(narrowed)


def test_all_refused_keeps_one_refused_section_then_bundles_it():
    plain = offer("audio", "video", "application")
    answer = answer_to(rollback.widen_offer(plain), accept="none")
    narrowed = rollback.narrow_answer(answer, plain)
    assert [mid for _, mid in sections(narrowed)] == ["0", "1", "2"]
    assert rollback.refuses_data(narrowed)
    assert bundle(narrowed) == ["0", "1"]
    assert bundle(rollback.bundle_refused_data(narrowed)) == ["0", "1", "2"]


def test_a_plain_answer_passes_unchanged():
    plain = offer("video", "application")
    assert rollback.narrow_answer(plain, plain) == plain
    assert rollback.bundle_refused_data(plain) == plain


def test_our_peer_answers_a_widened_offer_with_its_first_data_section():
    plain = offer("video", "application")
    single = rollback.single_data_section(rollback.widen_offer(plain))
    assert sections(single) == sections(plain) and bundle(single) == bundle(plain)


def test_an_answer_with_many_data_sections_is_left_alone_at_once():
    """A hostile answer of 64 KiB with thousands of data sections is no answer to a widened
    offer: it passes unchanged (aiortc refuses it), without being taken apart section by section."""
    plain = offer("video", "application")
    refused = "m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:{}\r\n"
    hostile = plain + "".join(refused.format(n) for n in range(2, 1500))
    hostile = hostile.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 " + " ".join(map(str, range(2, 1500))))
    assert rollback.narrow_answer(hostile, plain) == hostile
    assert rollback.refuses_data(hostile)
    assert bundle(rollback.bundle_refused_data(hostile)) == bundle(hostile)


def test_a_copy_identical_to_the_first_data_section_does_not_take_it_along():
    plain = offer("video", "application")
    doubled = plain + plain[plain.index("m=application"):]
    assert sections(rollback.single_data_section(doubled)) == sections(plain)
